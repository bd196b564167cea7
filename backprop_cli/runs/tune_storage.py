"""Where a tune study lives: an Optuna RDB URL (SQLite, PostgreSQL, MySQL) or a journal file, opened
with its driver; the password of a URL is never shown.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from backprop_cli.errors import BackpropError, OutputError

SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


@dataclass
class StorageSpec:
    """Where the study lives: an RDB URL (SQLite, PostgreSQL, MySQL, ...) or a journal file."""

    kind: str  # "rdb" or "journal"
    target: str  # the URL, or the journal file's path
    shown: str  # for people: the URL with its password masked, or the path
    note: str = ""  # why this one (the default's reason)

    def describe(self) -> str:
        what = "journal file" if self.kind == "journal" else (
            "SQLite" if self.target.startswith("sqlite") else self.target.split(":", 1)[0].split("+")[0])
        return f"{self.shown} ({what}{', ' + self.note if self.note else ''})"


def mask(url: str) -> str:
    """The URL with its password replaced by ``***`` (never printed, never in JSON)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not even a URL: hide whatever follows a ':' before an '@'
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def resolve_storage(storage: Optional[str], config: Path, study: str, workers: int) -> StorageSpec:
    """``--storage`` (a URL, a journal file, or a .db/.sqlite file), else the default beside the config:
    ``STUDY.db`` (SQLite) for one worker, ``STUDY.journal`` for several (SQLite is not safe for
    concurrent writers); one worker continues a study whose journal is there and whose .db is not."""
    if storage is not None:
        if "://" in storage:
            spec = StorageSpec("rdb", with_driver(storage), mask(storage))
        elif Path(storage).suffix.lower() in SQLITE_SUFFIXES:
            spec = StorageSpec("rdb", f"sqlite:///{Path(storage).resolve()}", storage)
        else:
            spec = StorageSpec("journal", str(storage), storage)
    else:
        folder = config.parent
        db, journal = folder / f"{study}.db", folder / f"{study}.journal"
        if workers > 1 or (journal.exists() and not db.exists()):
            why = "beside the config" + (f"; {workers} workers share it" if workers > 1 else "")
            spec = StorageSpec("journal", str(journal), str(journal), why)
        else:
            spec = StorageSpec("rdb", f"sqlite:///{db.resolve()}", str(db), "beside the config")
    if workers > 1 and spec.kind == "rdb" and spec.target.startswith("sqlite"):
        raise BackpropError(f"--workers {workers} with the SQLite storage {spec.shown}: SQLite is not safe for "
                            "concurrent writers; give a journal file (--storage FILE.journal) or a server URL")
    return spec


def storage_file(spec: StorageSpec) -> Optional[Path]:
    """The file a journal or SQLite storage writes (None: a server): never one of the command's inputs."""
    if spec.kind == "journal":
        return Path(spec.target)
    if spec.target.startswith("sqlite:///") and len(spec.target) > len("sqlite:///"):
        return Path(spec.target[len("sqlite:///"):].split("?", 1)[0])
    return None


def open_storage(spec: StorageSpec):
    """The Optuna storage, or one BackpropError line (exit 2) naming the storage, password masked."""
    if spec.kind == "journal":
        try:  # Optuna 4 and later
            from optuna.storages.journal import JournalFileBackend, JournalStorage
        except ImportError:  # Optuna 3.6: the same file backend under its older name
            from optuna.storages import JournalFileStorage as JournalFileBackend
            from optuna.storages import JournalStorage

        path = Path(spec.target)
        if not path.parent.is_dir():
            raise OutputError(f"--storage {spec.shown}: folder {path.parent} does not exist")
        if path.is_dir():
            raise OutputError(f"--storage {spec.shown}: is a directory; expected a journal file")
        try:
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as e:
            raise OutputError(f"--storage {spec.shown}: cannot open the journal file: {e.strerror or e}") from None
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        url = make_url(spec.target)
        url.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:
        scheme = spec.target.split("://", 1)[0]
        raise BackpropError(f"--storage {spec.shown}: unknown scheme {scheme!r}; expected an Optuna storage URL "
                            "(postgresql://, mysql://, sqlite:///) or the path of a journal file") from None
    except sqlalchemy.exc.ArgumentError:
        raise BackpropError(f"--storage {spec.shown}: not a database URL (expected e.g. postgresql://USER@HOST/DB, "
                            "mysql://..., sqlite:///FILE, or the path of a journal file)") from None
    from optuna.storages import RDBStorage

    try:
        return RDBStorage(spec.target, engine_kwargs={"pool_pre_ping": True} if url.get_backend_name() != "sqlite"
                          else None)
    except ImportError as e:
        missing = getattr(e.__cause__, "name", None) or "its module"
        hint = DRIVER_HINTS.get(url.get_backend_name(), "")
        raise BackpropError(f"--storage {spec.shown}: the database driver is not installed (no module "
                            f"{missing}){hint}") from None
    except sqlalchemy.exc.SQLAlchemyError as e:
        first = " ".join(str(getattr(e, "orig", None) or e).split())
        first = first.replace(url.password or "\0", "***") if url.password else first
        raise BackpropError(f"--storage {spec.shown}: cannot reach the storage: {first[:300]}") from None


# A bare postgresql:// or mysql:// URL takes the first of these drivers that is installed (SQLAlchemy's
# default alone: psycopg 3 for postgresql, mysqlclient for mysql)
DRIVERS = {"postgresql": (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")),
           "mysql": (("MySQLdb", "mysql+mysqldb"), ("pymysql", "mysql+pymysql"))}


DRIVER_HINTS = {"postgresql": "; pip install psycopg2-binary (or psycopg[binary])",
                "mysql": "; pip install pymysql (or mysqlclient)"}


def with_driver(url: str) -> str:
    """``postgresql://...`` → ``postgresql+psycopg2://...`` when psycopg 3 is absent and psycopg2 is there."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in DRIVERS:
        return url
    for module, name in DRIVERS[scheme]:
        if importlib.util.find_spec(module) is not None:
            return f"{name}://{rest}"
    return url


def open_study(spec: StorageSpec, name: str, metric: str, direction: str):
    """Create the study, or load it when it exists with the same metric and direction (else exit 2)."""
    import optuna

    quiet_optuna()
    storage = open_storage(spec)
    for attempt in range(3):  # tune started on several machines at once: one creates, the others load
        try:
            study = optuna.create_study(storage=storage, study_name=name, direction=direction, load_if_exists=True)
            break
        except Exception as e:  # noqa: BLE001 - the database's own error for the creation race (IntegrityError)
            if attempt == 2 or type(e).__name__ not in ("IntegrityError", "DuplicatedStudyError", "OperationalError"):
                raise BackpropError(f"--storage {spec.shown}: cannot create or load study {name}: "
                                    f"{' '.join(str(e).split())[:300]}") from None
            time.sleep(0.2 * (attempt + 1))
    had = study.user_attrs.get("metric")
    got = study.direction.name.lower()
    if (had is not None and had != metric) or got != direction:
        raise BackpropError(f"--study {name}: exists in {spec.shown} with metric {had or '?'} ({got}); this config "
                            f"searches {metric} ({direction}): give another --study (or --storage)")
    if had is None:
        study.set_user_attr("metric", metric)
    return study


STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def default_study_name(config: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", config.stem) or "study"
    return name if name[0].isalnum() else "s" + name


def check_study_name(name: str) -> None:
    if not STUDY_NAME.match(name):
        shown = name if len(name) <= 60 and name.isprintable() else repr(name[:57]) + "..."
        raise BackpropError(f"--study {shown}: a study name is 1-100 letters, digits, '_', '.' or '-', starting "
                            "with a letter or digit")


def quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the table says what happened to each trial
