"""The config is bounded (config/): YAML aliases, nesting, --set and integer literals end in one
line in bounded time."""



# --------------------------------------------------------------------------- bounded config: YAML, --set, integers
import time  # noqa: E402
import typing  # noqa: E402

import pytest
import yaml
from conftest import CONFIGS, within, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backprop_cli.config import load_config, load_text, parse_optimizer  # noqa: E402
from backprop_cli.errors import ConfigError
from backprop_cli.limits import MAX_COUNT, MAX_SEED  # noqa: E402


def laughs(depth: int) -> str:
    """The "billion laughs": each anchor is a list of nine aliases of the one before (9**depth values)."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, depth)]
    return "\n".join(lines) + f"\nmodel: {{input_size: 2, hidden_size: *a{depth - 1}, output_size: 1}}\n"


def config_error(call, seconds=20) -> list[str]:
    """The problems of the ConfigError that ``call`` raises, within ``seconds`` (an attack that takes
    minutes or all the memory is the defect); each problem one short line."""
    def attempt():
        try:
            call()
        except ConfigError as e:
            return e.problems
        except RecursionError:  # pragma: no cover - the defect itself
            return "RecursionError"
        return None

    problems = within(seconds, attempt)
    assert isinstance(problems, list), problems
    for line in problems:
        assert "\n" not in line and len(line) < 400, line
    return problems


@pytest.mark.parametrize("depth", [7, 10])
def test_a_billion_laughs_is_refused_at_once(tmp_path, depth):
    """Issue 16, item 8: 604 bytes took 15 s at depth 7 and all the memory at depth 10."""
    p = write(tmp_path / "laughs.yaml", laughs(depth))
    assert p.stat().st_size < 700
    assert config_error(lambda: load_config(p)) == [
        f"{p}:1: the document expands to more than 10,000 values (aliases that repeat aliases?); "
        "a config is far smaller"]


def test_an_alias_inside_itself_is_refused(tmp_path):
    p = write(tmp_path / "c.yaml", "seed: &a [*a]\n")
    assert config_error(lambda: load_config(p)) == [f"{p}:1: seed.0: an alias refers to a value that contains it"]
    m = write(tmp_path / "m.yaml", "model: &m {input_size: 2, output_size: 1, hidden_size: 3, <<: *m}\n")
    assert config_error(lambda: load_config(m)) == [f"{m}:1: model.<<: an alias refers to a value that contains it"]


def _deep(style: str, depth: int) -> str:
    if style == "flow":
        return "seed: " + "[" * depth + "]" * depth + "\n"
    if style == "block-mapping":  # one space of indentation per level: 5,000 levels in 13 MB otherwise
        return "".join(" " * i + f"k{i}:\n" for i in range(depth)) + " " * depth + "1\n"
    return "seed:\n" + "".join(" " * (i + 1) + "-\n" for i in range(depth)) + " " * (depth + 1) + "1\n"


@pytest.mark.parametrize("style", ["flow", "block-mapping", "block-sequence"])
@pytest.mark.parametrize("depth", [40, 500, 1200])
def test_deep_nesting_is_one_line_not_a_recursion_error(tmp_path, style, depth):
    p = write(tmp_path / "c.yaml", _deep(style, depth))
    (line,) = config_error(lambda: load_config(p))
    assert line.startswith(f"{p}") and ("nested more than 32 levels deep" in line or "YAML nests too deeply" in line)


@pytest.mark.parametrize("value,fragment", [
    ("&a [*a]", "an alias refers to a value that contains it"),
    ("[" * 500 + "]" * 500, "nested more than 32 levels deep" if yaml.__with_libyaml__ else "YAML nests too deeply"),
    ("[" * 40 + "]" * 40, "nested more than 32 levels deep"),
    ("{" + laughs(10).replace("\n", ", ").rstrip(", ") + "}", "expands to more than 10,000 values"),
    ("1" * 5000, "an integer of 5,000 characters"),
], ids=["alias-in-itself", "500-deep", "40-deep", "billion-laughs", "5000-digits"])
def test_set_and_optimizer_values_are_bounded_like_the_file(value, fragment):
    """--set and --optimizer values are YAML too: the same bounds, and the value shown shortened."""
    (line,) = config_error(lambda: load_config(CONFIGS / "seed.yaml", [f"seed={value}"]))
    assert line.startswith("--set seed: cannot parse value ") and fragment in line and len(line) < 250, line
    (line,) = config_error(lambda: parse_optimizer(f"sgd:lr={value}"))
    assert line.startswith("--optimizer sgd:lr=") and "optimizer.lr: cannot parse" in line and len(line) < 250, line


@pytest.mark.parametrize("literal", ["1" * 5000, "0x" + "f" * 5000, "0b" + "1" * 50000, "1_" + "0" * 5000,
                                     "1:" * 5000 + "1", "-" + "9" * 101])
def test_an_integer_literal_too_long_to_convert_is_one_line(tmp_path, literal):
    """Python refuses to turn an integer of over 4,300 digits into text (ValueError, a traceback): such a
    literal is refused before it becomes an integer, with its line."""
    p = write(tmp_path / "c.yaml", (CONFIGS / "seed.yaml").read_text().replace("seed: 0", f"seed: {literal}"))
    (line,) = config_error(lambda: load_config(p))
    assert line.startswith(f"{p}:3: seed: an integer of {len(literal):,} characters; a config takes integers "
                           "of at most 100 (got "), line


def test_long_keys_and_odd_list_indexes_in_set_are_one_short_line():
    (line,) = config_error(lambda: load_config(CONFIGS / "seed.yaml", ["k" * 3000 + "=1"]))
    assert line.startswith("--set: kkkk") and "...: unknown key" in line and len(line) < 300
    for key in ("model.hidden_sizes." + "1" * 5000, "model.hidden_sizes.²"):
        (line,) = config_error(lambda: load_config(CONFIGS / "seed.yaml", [f"{key}=3"]))
        assert line.startswith("--set: model.hidden_sizes: must be a valid list") and len(line) < 300, line
    (line,) = config_error(lambda: parse_optimizer("k" * 3000))
    assert "optimizer.name: unknown optimizer" in line and len(line) < 300


def _union_members(tp):
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) is typing.Union:
        return [m for a in typing.get_args(tp) for m in _union_members(a)]
    return [tp]


def integer_keys(model=None, path=(), tags=()):
    """Every integer key of the config schema, found by walking it (a new one is covered without a
    change here): ``(key path, [(tag path, tag), ...])``, the tags that select its union member."""
    from pydantic import BaseModel

    from backprop_cli.config import Config

    out = []
    for name, field in (model or Config).model_fields.items():
        for tp in _union_members(field.annotation):
            inner = _union_members(typing.get_args(tp)[0]) if typing.get_origin(tp) is list else []
            where = path + (name, 0) if inner else path + (name,)
            for sub in inner or [tp]:
                if sub is int:
                    out.append((where, tags))
                elif isinstance(sub, type) and issubclass(sub, BaseModel):
                    tag = next(((k, typing.get_args(sub.model_fields[k].annotation)[0]) for k in ("name", "kind")
                                if k in sub.model_fields
                                and typing.get_origin(sub.model_fields[k].annotation) is typing.Literal), None)
                    out += integer_keys(sub, where, tags + (((where + (tag[0],)), tag[1]),) if tag else tags)
    return out


INTEGER_KEYS = integer_keys()


def test_the_schema_walk_finds_the_integer_keys():
    found = {".".join(map(str, k)) for k, _ in INTEGER_KEYS}
    assert {"seed", "model.input_size", "model.hidden_sizes.0", "data.batch_size", "data.samples", "train.steps",
            "train.log_every", "train.max_skips", "scheduler.step_size", "scheduler.T_max",
            "scheduler.warmup_steps"} <= found


@pytest.mark.parametrize("key,tags", INTEGER_KEYS, ids=[".".join(map(str, k)) + "/" + "/".join(t for _, t in tags)
                                                        for k, tags in INTEGER_KEYS])
@pytest.mark.parametrize("huge", [10**20, 2**64, MAX_COUNT + 1])
def test_every_integer_key_refuses_a_huge_value_in_one_line(cli, key, tags, huge):
    """Issue 16, item 12: --set model.input_size=10^20 was a 106-line TypeError from torch."""
    dotted = ".".join(map(str, key))
    sets = [f"{'.'.join(map(str, p))}={t}" for p, t in tags] + [f"{dotted}={huge}"]
    if key[-1] == 0:
        sets[-1] = f"{dotted[:-2]}=[{huge}]"
    r = cli("config", "validate", "-c", CONFIGS / "seed.yaml", *[a for s in sets for a in ("--set", s)])
    bound = MAX_SEED if key in (("seed",), ("data", "split_seed")) else MAX_COUNT  # seeds: torch's seed range
    if huge <= bound:
        return
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert f"error: --set: {dotted}: must be less than or equal to {bound} (got {huge})" in r.stderr.splitlines()


COUNT_OPTIONS = [
    ["train", "-c", CONFIGS / "seed.yaml", "--steps"], ["train", "-c", CONFIGS / "seed.yaml", "--epochs"], ["train", "-c", CONFIGS / "seed.yaml", "--log-every"], ["train", "-c", CONFIGS / "seed.yaml", "--save-every"],
    ["compare-optimizers", "-c", CONFIGS / "seed.yaml", "--steps"], ["compare-optimizers", "-c", CONFIGS / "seed.yaml", "--seeds"],
    ["inspect-grads", "-c", CONFIGS / "seed.yaml", "--batch"], ["inspect-grads", "-c", CONFIGS / "seed.yaml", "--train-steps"],
    ["check-grads", "-c", CONFIGS / "seed.yaml", "--samples"], ["explain", "--updates"], ["find-lr", "-c", CONFIGS / "seed.yaml", "--steps"],
]


@pytest.mark.parametrize("args", COUNT_OPTIONS, ids=[" ".join(map(str, a[:1] + a[-1:])) for a in COUNT_OPTIONS])
def test_count_options_refuse_huge_values_before_any_work(cli, args):
    """A huge --steps, --seeds, ... is refused as the option's own error (exit 2), before torch runs."""
    r = cli(*args, 10**20)
    text = " ".join(r.output.replace("│", " ").split())  # typer's usage error is boxed
    assert r.exit_code == 2 and "Traceback" not in text, text
    assert f"Invalid value for '{args[-1]}'" in text and "less than or equal to" in text \
        or f"error: {args[-1]}: must be at most {MAX_COUNT}" in text, text


@pytest.mark.parametrize("spec,line", [
    ("foo.bar.baz=1", "error: --set: foo: unknown key; allowed keys: seed, device"),
    ("model.layers.0=5", "error: --set: model.layers: unknown key; allowed keys: input_size"),
    ("optimizer.lr.x=5", "error: --set optimizer.lr.x: optimizer.lr is not a mapping (got 0.01)"),
])
def test_a_key_only_set_wrote_is_blamed_on_set_not_the_file(cli, spec, line):
    """Issue 16, item 19: these were blamed on the config file (s.yaml:5)."""
    r = cli("config", "validate", "-c", CONFIGS / "seed.yaml", "--set", spec)
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith(line), r.stderr
    assert "seed.yaml" not in r.stderr


# YAML alias graphs (hypothesis): anchors holding scalars, nested collections, aliases of earlier anchors
# or of themselves, merge keys; every document ends in a Config or one ConfigError, in bounded time.

SCALARS = ["1", "2", "0.5", "lol", "true", "null", "[]", "{}", "-3", "1e-3"]


@st.composite
def alias_graphs(draw):
    cycles = draw(st.integers(0, 3)) == 0  # a quarter of the documents may refer to an anchor inside itself

    def ref(i):  # an earlier anchor, or (with cycles) now and then a{i} itself: the anchor being defined
        return i if i == 0 or (cycles and draw(st.integers(0, 9)) == 0) else draw(st.integers(0, i - 1))

    def value(i, depth):
        # an anchor's own value is no alias (``&a *b`` is not YAML)
        kind = draw(st.sampled_from([0, 2, 3, 4, 5, 6, 6] if depth == 0 else [0, 1, 2, 3, 4, 5, 6] if depth < 3
                                    else [0, 1]))
        if kind in (1, 4, 6) and i == 0 and not cycles:
            kind = 2  # a0 has no earlier anchor to refer to
        if kind == 6:  # fan-out: a list of aliases (nine of the anchor before, each level: a billion laughs)
            return "[" + ", ".join(f"*a{ref(i)}" for _ in range(draw(st.integers(2, 9)))) + "]"
        if kind == 0:
            return draw(st.sampled_from(SCALARS))
        if kind == 1:
            return f"*a{ref(i)}"
        if kind == 5:  # nesting in flow style, now and then past the limit of 32 levels
            levels = draw(st.sampled_from([1, 2, 3, 33]))
            return "[" * levels + value(i, depth + 1) + "]" * levels
        items = [value(i, depth + 1) for _ in range(draw(st.integers(0, 9 if depth == 0 else 3)))]
        if kind == 2:
            return "[" + ", ".join(items) + "]"
        pairs = [f"k{j}: {v}" for j, v in enumerate(items)]
        if kind == 4:  # merge: one alias or a list of them
            refs = [f"*a{ref(i)}" for _ in range(draw(st.integers(1, 3)))]
            pairs.insert(0, f"<<: {refs[0] if len(refs) == 1 else '[' + ', '.join(refs) + ']'}")
        return "{" + ", ".join(pairs) + "}"

    count = draw(st.integers(1, 8))
    lines = [f"a{i}: &a{i} {value(i, 0)}" for i in range(count)]
    use = lambda: f"*a{draw(st.integers(0, count - 1))}"  # noqa: E731
    body = {"model": f"{{input_size: 2, hidden_size: {use()}, output_size: 1}}",
            "train": f"{{steps: {use()}}}", "optimizer": f"{{<<: {use()}, name: sgd}}", "seed": use()}
    chosen = draw(st.lists(st.sampled_from(sorted(body)), min_size=1, max_size=4, unique=True))
    return "\n".join(lines + [f"{k}: {body[k]}" for k in chosen]) + "\n"


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(doc=alias_graphs())
def test_alias_graphs_end_in_one_config_error_in_bounded_time(doc):
    started = time.perf_counter()
    problems = config_error(lambda: load_text(doc, "g.yaml"))
    assert problems and all(line.startswith("g.yaml") for line in problems), problems
    assert time.perf_counter() - started < 10


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(values=st.fixed_dictionaries({k: st.sampled_from([1, 2, 3, 4, 8]) for k in
                                     ("input", "hidden", "output", "samples", "steps", "log")}),
       batch=st.sampled_from([1, 2, 3]), merge=st.booleans())
def test_aliases_in_a_valid_config_mean_the_values_they_name(values, batch, merge):
    """The oracle: the same config with every repeated value written out."""
    batch = min(batch, values["samples"])
    anchors: dict = {}

    def v(x):
        if x in anchors:
            return f"*v{x}"
        anchors[x] = True
        return f"&v{x} {x}"

    def text(val):  # val() is called in the order of the document: an anchor comes before its aliases
        out = f"seed: {val(values['log'])}\nmodel: "
        if merge:
            out += f"{{<<: &base {{input_size: {val(values['input'])}, output_size: {val(values['output'])}}}, "
        else:
            out += f"{{input_size: {val(values['input'])}, output_size: {val(values['output'])}, "
        out += f"hidden_size: {val(values['hidden'])}}}\n"
        out += f"data: {{kind: synthetic, samples: {val(values['samples'])}, batch_size: {val(batch)}}}\n"
        return out + f"train: {{steps: {val(values['steps'])}, log_every: {val(values['log'])}}}\n"

    aliased = load_text(text(v), "a.yaml")
    assert aliased.plain() == load_text(text(str), "a.yaml").plain()
    assert (aliased.model.input_size, aliased.train.steps, aliased.data.batch_size) == \
        (values["input"], values["steps"], batch)
