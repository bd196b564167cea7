"""CSV and synthetic data, shape checks, batch order."""

import pytest
import torch

from backprop_cli.config import load_config
from backprop_cli.data.batches import Batches
from backprop_cli.data.load import load_dataset
from backprop_cli.errors import DataError
from conftest import csv_config as setup




GOOD = """\
    a,b,y
    1,2,3
    4,5.5,6

    -1e-2,8,9
    """


def test_csv_loads_features_and_target_relative_to_the_config(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    ds = load_dataset(setup(tmp_path, GOOD))
    assert ds.feature_names == ["a", "b"] and ds.target_names == ["y"]
    assert torch.equal(ds.x, torch.tensor([[1, 2], [4, 5.5], [-0.01, 8]]))
    assert torch.equal(ds.y, torch.tensor([[3.0], [6], [9]]))


def test_csv_explicit_features_and_class_labels(tmp_path):
    text = "y,a,b,c\n0,1,2,9\n2,3,4,9\n1,5,6,9\n"
    ds = load_dataset(setup(tmp_path, text, ", features: [b, a]", loss="cross_entropy", sizes=(2, 4, 3)))
    assert torch.equal(ds.x, torch.tensor([[2.0, 1], [4, 3], [6, 5]]))
    assert ds.y.dtype == torch.int64 and ds.y.tolist() == [0, 2, 1]


@pytest.mark.parametrize("text,extra,expect", [
    ("a,b,y\n1,2,3\n4,x5,6\n", "", "d.csv:3: column 'b': not a number (got 'x5')"),
    ("a,b,y\n1,2,3\n4,5\n", "", "d.csv:3: row has 2 cells, the header has 3"),
    ("a,b,y\n1,2,\n", "", "d.csv: no data rows left"),  # a missing target drops its row
    ("", "", "d.csv: empty file"),
    ("a,b,y\n", "", "d.csv: no data rows"),
    ("a,b,z\n1,2,3\n", "", "d.csv: data.target: column 'y' is not in the header (columns: a, b, z)"),
    ("a,b,y\n1,2,3\n", ", features: [a, q]", "data.features: column 'q' is not in the header"),
    ("a,a,y\n1,2,3\n", "", "d.csv:1: column 'a' appears twice"),
    ("a,b,y\n1,2,nan\n3,,4\n", ", missing: error", "d.csv:3: column 'b': missing value"),
    ("a,b,y\n1,2,inf\n", "", "d.csv:2: column 'y': not a finite number (got 'inf')"),
    ("a,b,y\n1,3.4e39,1\n", "", "d.csv:2: column 'b': 3.4e39 is beyond float32's range"),
    ("\ufeffa,b,z\n1,2,3\n", "", "column 'y' is not in the header (columns: a, b, z)"),
])
@pytest.mark.parametrize("fast", [False, True], ids=["exact", "pyarrow"])
def test_bad_csv_names_file_row_and_column(tmp_path, monkeypatch, text, extra, expect, fast):
    monkeypatch.setattr("backprop_cli.data.readers.FAST_READER_BYTES", 0 if fast else 1 << 40)
    with pytest.raises(DataError) as e:
        load_dataset(setup(tmp_path, text, extra))
    assert expect in str(e.value) and "\n" not in str(e.value)


def test_missing_csv(tmp_path):
    cfg = setup(tmp_path, GOOD)
    (tmp_path / "d.csv").unlink()
    with pytest.raises(DataError, match=r"d.csv: no such file \(data.path\)"):
        load_dataset(cfg)


def test_shape_mismatches_say_what_to_change(tmp_path):
    with pytest.raises(DataError, match=r"the data gives 2 inputs \(2 numbers = 2 inputs\) but model.input_size is 3; set model.input_size: auto \(or 2\)"):
        load_dataset(setup(tmp_path, GOOD, sizes=(3, 4, 1)))
    with pytest.raises(DataError, match="1 target columns but model.output_size is 2; set model.output_size: 1"):
        load_dataset(setup(tmp_path, GOOD, sizes=(2, 4, 2)))
    with pytest.raises(DataError, match=r"the target has 3 classes \(3, 6, 9\) but model.output_size is 2; set "
                                        "model.output_size: 3"):
        load_dataset(setup(tmp_path, GOOD, loss="cross_entropy", sizes=(2, 4, 2)))
    with pytest.raises(DataError, match="batch_size \\(5\\) is larger than the 3 training rows"):
        load_dataset(setup(tmp_path, GOOD, batch=5))


def test_classic_random_targets_are_randn(tmp_path):
    from conftest import CONFIGS

    ds = load_dataset(load_config(CONFIGS / "seed.yaml"))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 10, generator=g)
    assert torch.equal(ds.x, x) and torch.equal(ds.y, torch.randn(5, 1, generator=g))


def test_class_targets_for_both_classification_losses(tmp_path):
    base = "model: {input_size: 3, hidden_size: 4, output_size: 4}\ndata: {kind: synthetic, samples: 200, targets: classes}\n"
    (tmp_path / "c.yaml").write_text(base + "loss: cross_entropy\n")
    ds = load_dataset(load_config(tmp_path / "c.yaml"))
    assert ds.y.dtype == torch.int64 and set(ds.y.tolist()) == {0, 1, 2, 3}
    (tmp_path / "c.yaml").write_text(base + "loss: bce_with_logits\n")
    ds = load_dataset(load_config(tmp_path / "c.yaml"))
    assert ds.y.shape == (200, 4) and set(ds.y.unique().tolist()) == {0.0, 1.0}


def test_unshuffled_batches_are_consecutive_rows_with_a_short_last_batch():
    x = torch.arange(10.0).reshape(10, 1)
    b = Batches(x, x * 2, batch_size=4, shuffle=False, seed=0)
    assert b.per_epoch == 3
    assert [b(i)[0].flatten().tolist() for i in range(4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [0, 1, 2, 3]]


def test_shuffled_batches_cover_every_row_each_epoch_in_a_new_order():
    x = torch.arange(12.0).reshape(12, 1)
    b = Batches(x, x * 2, batch_size=4, shuffle=True, seed=3)
    epochs = [[v for k in range(3) for v in b(e * 3 + k)[0].flatten().tolist()] for e in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(12))
    assert epochs[0] != epochs[1] and epochs[0] != list(range(12))
    xb, yb = b(4)
    assert torch.equal(yb, xb * 2)  # inputs and targets stay paired
    again = Batches(x, x * 2, batch_size=4, shuffle=True, seed=3)
    assert torch.equal(again(4)[0], xb)  # any step's batch can be recomputed


def _epoch_by_epoch(x, y, batch_size, shuffle, seed, index):
    """The order as it is defined: epoch e is a randperm from a generator seeded with epoch_seed(seed, e)."""
    from backprop_cli.data.batches import epoch_seed

    per_epoch = -(-x.shape[0] // batch_size)
    epoch, k = divmod(index, per_epoch)
    if shuffle:
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))
        x, y = x[perm], y[perm]
    return x[k * batch_size:(k + 1) * batch_size], y[k * batch_size:(k + 1) * batch_size]


@pytest.mark.parametrize("samples, batch_size", [(5, 5), (5, 8), (7, 3), (1, 1), (60, 60)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_every_batch_is_the_epoch_by_epoch_order_bitwise(samples, batch_size, shuffle, monkeypatch):
    """Whole-data batches are prefetched several epochs at a time; any step, in any order (a resume
    starts anywhere), gets exactly the rows the definition gives, labels included."""
    monkeypatch.setattr(Batches, "PREFETCH_ELEMENTS", 300)  # cross many prefetch boundaries
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(samples, 3, generator=g), torch.randint(0, 4, (samples,), generator=g)
    b = Batches(x, y, batch_size, shuffle, seed=11)
    for index in [*range(40), 1000, 999, 3, 12345, 12346, 7]:
        xb, yb = b(index)
        want_x, want_y = _epoch_by_epoch(x, y, batch_size, shuffle, 11, index)
        assert torch.equal(xb, want_x) and torch.equal(yb, want_y), index
