"""The results folder's schema: each table's columns and types, and the one reader of each file.

(Over 450 lines: the readers and the resume checks apply one schema and are read together.)

Every reader in lossjax goes through the readers here (``read_epochs``, ``read_summary``,
``read_config``, ``read_env``), and every file through :func:`read_regular`: the sweep's resume
path (``resume=True``: a refusal says the folder cannot be resumed) and ``lossjax.analysis``
(a finished sweep) apply the same rules, except where a resume needs more (exactly lossjax's
columns, ``diverged`` only True/False, metrics as the float32 the sweep holds) or a finished
sweep's reader accepts what older or hand-made folders hold (a subset of the columns, a
``diverged`` of 0/1). The writers build their tables from the same declarations
(:data:`EPOCHS`, :data:`SUMMARY`, :data:`FINAL`).

``epochs.csv`` columns, per member and epoch: the member's swept values; ``train_loss`` (mean of
its own loss over the epoch's batches); ``train_acc`` (running accuracy over those batches, as in
Flax's MNIST example, not a second pass); ``val_acc``/``val_ce`` and ``test_acc``/``test_ce``
(accuracy and cross-entropy of softmax(logits), comparable across losses: the cross-entropy is
the negative log-likelihood, NLL); ``val_brier``/``val_ece`` and ``test_brier``/``test_ece``
(Brier score and expected calibration error of softmax(logits), ``lossjax.calibration``);
``temperature`` (fitted on val at the last epoch only) and ``test_ce_ts``/``test_brier_ts``/
``test_ece_ts`` (the test NLL, Brier score and ECE of softmax(logits / temperature); NaN except
at the last epoch, and for a diverged member); ``wrong_frac`` (the
fraction of wrong-class logits whose gradient was negative, i.e. that a step pushed up, averaged
over batches: the quantity the exp-MSE argument is about); ``grad_norm`` (mean per-example
norm of d loss / d logits); ``diverged`` (true from the epoch the member's loss or parameters
went non-finite; its parameters stay frozen at the last good values, its training metrics are
NaN); ``wall_time`` (seconds since the sweep started, over every group of members, which run one
after another; time a stopped sweep spent dead before ``--resume`` is not counted; a measurement
rather than a result).

``summary.csv`` (:data:`SUMMARY`, written by ``lossjax.stats.summarize``) holds one row per
group (:data:`GROUP_KEYS`); ``config.yaml`` the resolved config; ``env.json`` where the sweep
ran (``lossjax.provenance``). On a resume, :func:`check_kept_rows` checks the table's side of
"do the checkpoints and the table agree" (``lossjax.checkpoint.check_resumable``).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from lossjax.errors import ResultsError, one_line

# ---- the columns of each table ----------------------------------------------------------------
#
# Kinds: "int" (whole numbers), "text", "bool" (True/False), "float" and "float32" (computed in
# float32: kept so in memory and after reading back for a resume, so that a resumed sweep writes
# the same text as an uninterrupted one; a finished sweep's reader reads every float as float64).

#: epochs.csv's probability-quality columns (``lossjax.calibration``): NaN where not evaluated.
CALIBRATION_COLUMNS = ("val_brier", "val_ece", "test_brier", "test_ece", "temperature",
                       "test_ce_ts", "test_brier_ts", "test_ece_ts")
#: epochs.csv: one row per member and epoch, in this column order.
EPOCHS = {
    "member": "int", "loss": "text", "optimizer": "text", "hidden": "text", "model": "text",
    "learning_rate": "float",
    "weight_decay": "float", "init_scale": "float", "seed": "int", "epoch": "int",
    "train_loss": "float32", "train_acc": "float32", "val_acc": "float32", "val_ce": "float32",
    "test_acc": "float32", "test_ce": "float32", "wrong_frac": "float32", "grad_norm": "float32",
    **{c: "float32" for c in CALIBRATION_COLUMNS},
    "diverged": "bool", "wall_time": "float",
}
EPOCHS_COLUMNS = list(EPOCHS)
#: The columns of epochs.csv that reading a finished sweep needs (older or hand-made tables may
#: lack the others).
EPOCHS_REQUIRED = (
    "member", "loss", "hidden", "learning_rate", "seed", "epoch",
    "train_loss", "val_acc", "test_acc", "wrong_frac", "diverged",
)
#: Metrics the engine computes in float32.
FLOAT32_COLUMNS = tuple(c for c, kind in EPOCHS.items() if kind == "float32")

#: The summary.csv columns that say how clearly a group's rate was chosen
#: (``lossjax.stats.rate_choice``); they follow ``lr_at_grid_edge``. Folders written before them
#: lack them: ``lossjax.analysis`` computes them from epochs.csv with ``rate_choice`` then.
RATE_CHOICE = {
    "runner_up_lr": "float", "val_gap_mean": "float32", "val_gap_ci95": "float",
    "rate_tied": "bool", "rate_choice": "text", "tied_lrs": "text",
}
RATE_CHOICE_COLUMNS = tuple(RATE_CHOICE)
#: The summary.csv columns of probability quality at the chosen rate, means over its seeds of
#: epochs.csv's last epoch: ``test_nll_mean`` of ``test_ce``, the others of the column without
#: ``_mean`` (``_ts``: after temperature scaling). They follow the other columns; folders written
#: before them lack them, and everything that reads a summary goes on without them.
CALIBRATION_SUMMARY = {
    "test_nll_mean": "float32", "test_brier_mean": "float32", "test_ece_mean": "float32",
    "temperature_mean": "float32", "test_nll_ts_mean": "float32",
    "test_brier_ts_mean": "float32", "test_ece_ts_mean": "float32",
}
#: Where each comes from in epochs.csv.
CALIBRATION_SOURCES = {
    "test_nll_mean": "test_ce", "test_brier_mean": "test_brier", "test_ece_mean": "test_ece",
    "temperature_mean": "temperature", "test_nll_ts_mean": "test_ce_ts",
    "test_brier_ts_mean": "test_brier_ts", "test_ece_ts_mean": "test_ece_ts",
}
#: summary.csv: one row per group, in this column order.
SUMMARY = {
    "loss": "text", "optimizer": "text", "hidden": "text", "model": "text",
    "weight_decay": "float",
    "init_scale": "float", "learning_rate": "float", "lr_at_grid_edge": "bool", **RATE_CHOICE,
    "n_seeds": "int", "val_acc_mean": "float32", "test_acc_mean": "float32",
    "test_acc_ci95": "float", "epochs_to_target_mean": "float", "reached_target": "int",
    "diverged_at_lr": "int", "diverged": "int",
    **CALIBRATION_SUMMARY,
}
SUMMARY_COLUMNS = list(SUMMARY)
#: The columns of summary.csv that reading a finished sweep needs, in the order a comparison
#: shows them.
SUMMARY_REQUIRED = (
    "loss", "hidden", "learning_rate", "n_seeds", "val_acc_mean", "test_acc_mean",
    "test_acc_ci95", "epochs_to_target_mean", "reached_target", "diverged",
)
#: stops.csv of a race (``lossjax.search.stops_table``): each member stopped before the last
#: epoch, the last epoch it trained, and why ('diverged', 'dropped at epoch N').
STOPS = {"member": "int", "epoch": "int", "reason": "text"}
#: added.csv of a sweep with later stages (``lossjax.plan.added_table``): each member a stage
#: after the grid added, the stage (1 is the first after the grid) and why.
ADDED = {"member": "int", "stage": "int", "reason": "text"}
#: The results folder's format, recorded in status.json (``"format": 2``): from 2 on, both
#: tables name each member's optimizer (optimizer.name may sweep several). A folder without
#: one is format 1, of a single optimizer: its readers fill the column in from config.yaml.
FORMAT = 2
#: final.csv: the test split at each member's last epoch, one row per member and ``kind``:
#: 'class' (``index`` a true class: its test ``count`` and ``accuracy``; ``confidence`` empty),
#: 'reliability' and 'reliability_ts' (``index`` a confidence bin of
#: ``lossjax.calibration.NUM_BINS``, before and after temperature scaling: the ``count`` of its
#: examples, their mean ``confidence`` and ``accuracy``, empty where the bin is). Members in the
#: order they train, kinds in this order; no 'reliability_ts' rows for a diverged member.
FINAL = {"member": "int", "kind": "text", "index": "int", "count": "int",
         "confidence": "float32", "accuracy": "float32"}
FINAL_COLUMNS = list(FINAL)
FINAL_KINDS = ("class", "reliability", "reliability_ts")
#: What makes a group, one summary.csv row: its members differ only in rate and seed.
#: ``model`` (:func:`model_name`: ``mlp``, ``cnn 32-64``, ``module:pkg:Class``) only where a table
#: holds it (:func:`group_keys`): tables written before it, and tables built by hand, are MLPs'.
GROUP_KEYS = ["loss", "optimizer", "hidden", "model", "weight_decay", "init_scale"]


def group_keys(table: pd.DataFrame) -> list[str]:
    """:data:`GROUP_KEYS` that ``table`` holds (``model`` only where it is filled in)."""
    return [k for k in GROUP_KEYS
            if k != "model" or k in table.columns and table[k].notna().any()]


def model_name(kind: str, channels=()) -> str:
    """The ``model`` column's text: ``mlp``, ``cnn`` and its channels (``cnn 32-64``), or a
    user's ``module:pkg:Class``; hidden sizes are the ``hidden`` column's."""
    return f"cnn {'-'.join(map(str, channels))}" if kind == "cnn" else kind
#: Swept values besides the learning rate that pick a summary row's members when present in
#: both tables (floats, compared with a relative tolerance because they round-trip through CSV).
MATCH_COLUMNS = ("weight_decay", "init_scale")


# ---- reading a file of the folder -------------------------------------------------------------

_FILE_FIX = "put back the file lossjax wrote there, or start the sweep over with --overwrite"


def kind_of(mode: int) -> str:
    """What a file that is not a regular one is, for a message: 'a FIFO', 'a folder', ..."""
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device")):
        if test(mode):
            return name
    return "not a regular file"


def read_regular(path: Path, fix: str = _FILE_FIX, limit: int = -1) -> bytes | None:
    """The bytes of a file in a results folder (its first ``limit``, if given), or None where
    there is none.

    Opened without following a symbolic link and without blocking, then read only if it is a
    regular file: a FIFO in a file's place would make a plain read wait forever, and a link
    would read (and trust) a file outside the folder. Anything else is refused in one line
    ending with ``fix``.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        what = ("is a symbolic link, which lossjax does not follow inside a results folder"
                if e.errno == errno.ELOOP else f"cannot be read ({e.strerror or e})")
        raise ResultsError(f"{path} {what}; {fix}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ResultsError(f"{path} is {kind_of(mode)}, not a regular file; {fix}")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(limit)
    except OSError as e:
        raise ResultsError(f"{path} cannot be read ({e.strerror or e}); {fix}") from None
    finally:
        os.close(fd)



def read_if_regular(path: Path, limit: int = -1) -> bytes | None:
    """:func:`read_regular`, but None (not an error) where ``path`` is a link or not a regular
    file: for the questions asked before a folder is known to be lossjax's."""
    try:
        return read_regular(path, limit=limit)
    except ResultsError:
        return None


# ---- the readers ------------------------------------------------------------------------------


def _table_damaged(path: Path, why: str) -> ResultsError:
    return ResultsError(f"{path} {why}; the folder cannot be resumed: put back the epochs.csv "
                        "lossjax wrote, or start the sweep over with --overwrite")


def _as_bool(col: pd.Series) -> pd.Series:
    if col.dtype == bool:
        return col
    if pd.api.types.is_numeric_dtype(col):
        return col.fillna(0).astype(float) != 0
    return col.astype(str).str.strip().str.lower().isin({"true", "1", "1.0", "yes"})


def _read_csv(path: Path, declared: dict, required, resume: bool) -> pd.DataFrame | None:
    """A table checked and typed as ``declared`` says; None where a resume finds no file or no
    rows yet (no epoch finished). For reading a finished sweep it must hold rows with at least
    ``required``; for a resume, exactly the declared columns."""
    data = read_regular(path)
    if data is None:
        if resume:
            return None
        raise ResultsError(
            f"{path} is missing: a finished sweep writes epochs.csv and summary.csv "
            "(run `lossjax sweep CONFIG`, or `--resume` an interrupted one)")
    try:
        # Text stays text: "32" hidden units is no number, an empty tied_lrs cell no NaN.
        df = pd.read_csv(io.BytesIO(data),
                         dtype={c: str for c, kind in declared.items() if kind == "text"})
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as e:
        if resume:
            raise _table_damaged(path, f"is damaged ({one_line(e, 120)})") from None
        raise ResultsError(f"{path} is unreadable: {one_line(e)}") from e
    if resume:
        # A lossjax table but for the optimizer column: an older lossjax's.
        if ("optimizer" in declared and "optimizer" not in df.columns
                and {"member", "loss", "epoch"} <= set(df.columns)):
            raise ResultsError(f"{path} was written by an earlier lossjax (folder format 1, "
                               "without the optimizer column), and this one cannot append to "
                               "it; finish the sweep with the lossjax that started it, or "
                               "start it over with --overwrite")
        if "model" in declared and list(df.columns) == [c for c in declared if c != "model"]:
            df.insert(list(declared).index("model"), "model", "mlp")  # before the column: MLPs
        if list(df.columns) != list(declared):
            raise _table_damaged(path, "does not have lossjax's columns")
        if df.empty:
            return None
    else:
        missing = [c for c in required if c not in df.columns]
        if missing:
            raise ResultsError(f"{path} lacks column(s) {', '.join(missing)} "
                               f"(has: {', '.join(map(str, df.columns))})")
        if df.empty:
            raise ResultsError(f"{path} has no rows")
    if not data.endswith(b"\n"):
        # pandas fills a short last row with NaN (or reads "Tr" of "True" as False) without a
        # word; every table a sweep writes ends with a line break.
        raise (_table_damaged(path, "ends mid-row (it was cut short)") if resume else
               ResultsError(f"{path} ends mid-row (no line break after its last line): the file "
                            "was cut short after the sweep wrote it; restore it, or rerun the "
                            "sweep"))
    if not resume:
        # A resume finds these as cells other than the member's own (check_kept_rows).
        for c in (c for c in ("loss", "optimizer", "hidden") if c in df.columns):
            if df[c].isna().any():  # a crash later on, in the sorting by name
                line = df.index[df[c].isna()][0] + 2  # 1-based, after the header
                raise ResultsError(f"{path}: line {line} has no {c}")
    kinds = {c: kind for c, kind in declared.items() if c in df.columns}
    for c in (c for c, kind in kinds.items() if kind == "int"):
        if not pd.api.types.is_integer_dtype(df[c]):
            raise (_table_damaged(path, f"has a {c} that is not a whole number") if resume else
                   ResultsError(f"{path}: column {c} must hold integers"))
    for c in (c for c, kind in kinds.items() if kind == "bool"):
        if not resume:
            df[c] = _as_bool(df[c])
        elif df[c].dtype != bool:
            raise _table_damaged(path, f"has a {c} value that is neither True nor False")
    try:
        df = df.astype({c: np.float32 if kind == "float32" and resume else float
                        for c, kind in kinds.items() if kind in ("float", "float32")})
    except (ValueError, TypeError):
        raise (_table_damaged(path, "has a value that is not a number where one belongs")
               if resume else ResultsError(f"{path} has a value that is not a number where one "
                                           "belongs")) from None
    if "tied_lrs" in df.columns:
        df["tied_lrs"] = df["tied_lrs"].fillna("").astype(str)  # no tied rate
    return df


def read_epochs(folder: Path, *, resume: bool = False) -> pd.DataFrame:
    """``epochs.csv`` (:data:`EPOCHS`), checked: whole, every row ending in a line break, whole
    numbers where they belong, loss and hidden sizes in every row. For a resume, an empty table
    where no epoch finished yet; otherwise the file must hold rows."""
    table = _read_csv(Path(folder) / "epochs.csv", EPOCHS, EPOCHS_REQUIRED, resume)
    if table is None:
        return pd.DataFrame(columns=EPOCHS_COLUMNS)
    return table if resume else with_model(with_optimizer(table, folder, "epochs.csv"))


def read_summary(folder: Path) -> pd.DataFrame:
    """``summary.csv`` (:data:`SUMMARY`), checked as :func:`read_epochs` checks a finished
    sweep's table; a folder written before :data:`RATE_CHOICE_COLUMNS` lacks those, and one
    of format 1 the optimizer column (filled in, :func:`with_optimizer`)."""
    table = _read_csv(Path(folder) / "summary.csv", SUMMARY, SUMMARY_REQUIRED, resume=False)
    return with_model(with_optimizer(table, folder, "summary.csv"))


def with_model(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its ``model`` column after ``hidden``: as read, or ``mlp`` in a folder
    written before other models existed."""
    if "model" in table.columns:
        return table
    table = table.copy()
    table.insert(list(table.columns).index("hidden") + 1, "model", "mlp")
    return table


def with_optimizer(table: pd.DataFrame, folder: Path, name: str) -> pd.DataFrame:
    """``table`` with its ``optimizer`` column after ``loss``: as read, or, in a folder of
    format 1 (written before optimizers were swept, with one optimizer), filled in with
    config.yaml's ``optimizer.name`` (the default, momentum, where config.yaml has none)."""
    if "optimizer" in table.columns:
        return table
    opt = (read_config(folder) or {}).get("optimizer")
    given = opt.get("name", "momentum") if isinstance(opt, dict) else "momentum"
    if not isinstance(given, str):
        raise ResultsError(f"{Path(folder) / name} lacks the optimizer column, which a sweep "
                           f"of several optimizers (config.yaml: {given}) writes")
    table = table.copy()
    table.insert(list(table.columns).index("loss") + 1, "optimizer", given)
    return table


def read_record(folder: Path, name: str, declared: dict) -> pd.DataFrame | None:
    """A record a finished sweep writes beside its tables (``stops.csv``: :data:`STOPS`,
    ``added.csv``: :data:`ADDED`), exactly its columns, whole numbers where they belong; it may
    hold no rows. None where the folder has none."""
    path = Path(folder) / name
    data = read_regular(path)
    if data is None:
        return None
    try:
        df = pd.read_csv(io.BytesIO(data),
                         dtype={c: str for c, kind in declared.items() if kind == "text"})
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as e:
        raise ResultsError(f"{path} is unreadable: {one_line(e)}") from e
    if list(df.columns) != list(declared) or not data.endswith(b"\n"):
        raise ResultsError(f"{path} is not the table lossjax writes (columns "
                           f"{', '.join(declared)}, each row ending in a line break); restore "
                           "it, or rerun the sweep")
    for c in (c for c, kind in declared.items() if kind == "int"):
        if len(df) and not pd.api.types.is_integer_dtype(df[c]):
            raise ResultsError(f"{path}: column {c} must hold integers")
    return df.astype({c: int for c, kind in declared.items() if kind == "int"})


def read_final(folder: Path, *, resume: bool = False) -> pd.DataFrame | None:
    """``final.csv`` (:data:`FINAL`), checked as the other tables; None where there is none (a
    folder written before it, a sweep without a test split, or a resume before any group
    finished). For a resume, exactly the declared columns, the metrics in float32."""
    path = Path(folder) / "final.csv"
    if read_regular(path) is None:
        return None
    return _read_csv(path, FINAL, FINAL_COLUMNS, resume)


def normalize(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its float32 metrics (:data:`FLOAT32_COLUMNS`) in float32, as the sweep
    holds them."""
    return table.astype({c: np.float32 for c in FLOAT32_COLUMNS if c in table.columns})


def has_rows(folder: Path) -> bool:
    """Whether ``epochs.csv`` holds a row below its header."""
    raw = read_if_regular(Path(folder) / "epochs.csv", 1 << 16) or b""
    return len(raw.rstrip(b"\n").split(b"\n")) > 1


def read_config(folder: Path, *, resume: bool = False) -> dict | None:
    """``config.yaml`` (the resolved config) as a dict; None where there is none (yet)."""
    path = Path(folder) / "config.yaml"
    data = read_regular(path)
    if data is None:
        return None
    try:
        saved = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        if resume:
            problem = one_line(e, 120)
            raise ResultsError(f"{path} is damaged ({problem}); the folder cannot be resumed: "
                               "start it over with --overwrite") from None
        raise ResultsError(f"{path} is unreadable: {one_line(e)}") from e
    if not isinstance(saved, dict):
        if resume:
            raise ResultsError(f"{path} is damaged (not a mapping); the folder cannot be "
                               "resumed: start it over with --overwrite")
        raise ResultsError(f"{path} is not a mapping (got {type(saved).__name__})")
    return saved


def read_env(folder: Path) -> dict | None:
    """``env.json`` (versions, devices, precision, provenance), or None where it is absent or
    not a mapping: the record of where a sweep ran is optional to everything that reads the
    folder. Raises ``ResultsError`` where it is not JSON."""
    path = Path(folder) / "env.json"
    data = read_regular(path)
    if data is None:
        return None
    try:
        env = json.loads(data)
    except ValueError as e:  # UnicodeDecodeError included
        raise ResultsError(f"{path} is unreadable: {one_line(e)}") from e
    return env if isinstance(env, dict) else None


# ---- what the rows hold -----------------------------------------------------------------------


def member_keys(members) -> pd.DataFrame:
    """The columns that name each member of a group (``engine.Member``s), as its rows hold them."""
    return pd.DataFrame({
        "member": [m.index for m in members],
        "loss": [m.loss for m in members],
        "optimizer": [m.optimizer for m in members],
        "hidden": ["-".join(map(str, m.hidden)) or "linear" for m in members],
        "model": [model_name(m.kind, m.channels) for m in members],
        "learning_rate": [m.learning_rate for m in members],
        "weight_decay": [m.weight_decay for m in members],
        "init_scale": [m.init_scale for m in members],
        "seed": [m.seed for m in members],
    })


def rows_digest(table: pd.DataFrame) -> str:
    """A checksum of a table's values (not its text: another pandas may print a number
    otherwise), as read back from epochs.csv they give the same checksum again. A manifest
    records it, so that rows edited, swapped or lost after the sweep wrote them are refused on
    resume rather than carried into the final table."""
    h = hashlib.sha256()
    for c, kind in EPOCHS.items():
        if c == "model" and (table[c] == "mlp").all():
            continue  # so that manifests written before the column still match an MLP's rows
        col = table[c]
        if kind == "text":
            data = "\x1f".join(col.astype(str)).encode()
        elif kind == "bool":
            data = col.astype(bool).to_numpy(np.uint8).tobytes()
        elif kind == "int":
            data = col.to_numpy(np.int64).tobytes()
        else:
            a = col.to_numpy(np.float32 if kind == "float32" else np.float64)
            data = np.where(np.isnan(a), np.nan, a).astype(a.dtype).tobytes()  # one NaN
        h.update(f"{c}:{len(data)}:".encode() + data)
    return h.hexdigest()



# ---- resuming: the table's side ---------------------------------------------------------------


def check_kept_rows(out: Path, table: pd.DataFrame, groups, done: list[int], epochs: int,
                    stops_of, digest: str | None, recorded_in: str | None) -> None:
    """Refuses (one line) a table that the checkpoints do not stand behind: ``done`` holds the
    epoch each group's checkpoint is after; every member must have exactly the rows of epochs
    1..E, in the order the sweep wrote them (then at most the next epoch of the group in
    progress), with the values only a sweep writes and the checksum ``digest`` that the manifest
    ``recorded_in`` records (None: an older lossjax recorded none)."""
    path = out / "epochs.csv"
    stopped = {}
    if stops_of is not None:  # a race: from the rows the checkpoints stand behind
        gid_of = {m.index: g for g, ms in enumerate(groups) for m in ms}
        behind = [e <= done[gid_of.get(m, 0)] for m, e in
                  zip(table["member"].to_numpy(), table["epoch"].to_numpy(), strict=True)]
        stopped = stops_of(table[behind])
    expected = _expected_rows(groups, done, stopped)
    _check_order(path, table, expected, done, groups, epochs, stopped)
    kept = table.iloc[:len(expected)]
    _check_values(path, kept, groups)
    if digest is not None and rows_digest(kept) != digest:
        raise _table_damaged(path, f"was changed after the sweep wrote it (its rows do not match "
                                   f"the checksum {recorded_in} records)")


def _trained(m, k: int, stopped: dict) -> bool:
    return m.index not in stopped or stopped[m.index].epoch >= k


def _expected_rows(groups, done: list[int], stopped: dict) -> pd.DataFrame:
    """(member, epoch) of the rows the checkpoints stand behind, in the order written: group by
    group, epoch by epoch, members in order (of a member a race stopped, none after its
    stop)."""
    member, epoch = [], []
    for members, e in zip(groups, done, strict=True):
        for k in range(1, e + 1):
            trained = [m.index for m in members if _trained(m, k, stopped)]
            member += trained
            epoch += [k] * len(trained)
    return pd.DataFrame({"member": member, "epoch": epoch}, dtype=np.int64)


def _check_order(path: Path, table: pd.DataFrame, expected: pd.DataFrame, done, groups,
                 epochs: int, stopped: dict) -> None:
    """The table's rows are the expected ones, in order, and then at most the next epoch of the
    group in progress (written just before its checkpoint, by a process killed between)."""
    n = min(len(table), len(expected))
    got = table[["member", "epoch"]].to_numpy(np.int64)
    want = expected.to_numpy(np.int64)
    bad = np.flatnonzero((got[:n] != want[:n]).any(axis=1))
    if len(bad):
        i = int(bad[0])
        raise _table_damaged(path, f"line {i + 2} holds member {got[i, 0]} epoch {got[i, 1]} "
                                   f"where member {want[i, 0]} epoch {want[i, 1]} belongs (rows "
                                   "missing, repeated, reordered or edited)")
    if len(table) < len(expected):
        i = len(table)
        gid = next(g for g, ms in enumerate(groups) if any(m.index == want[i, 0] for m in ms))
        raise _table_damaged(path, f"has {len(table)} of the {len(expected)} rows the checkpoints "
                                   f"stand behind (from member {want[i, 0]} epoch {want[i, 1]} "
                                   f"on; checkpoints/group{gid}.json is after epoch {done[gid]})")
    extra = got[len(expected):]
    # The group in progress is the first one short of the last epoch.
    nxt = next((g for g in range(len(groups)) if done[g] < epochs), None)
    allowed = (np.zeros((0, 2), np.int64) if nxt is None else
               np.array([[m.index, done[nxt] + 1] for m in groups[nxt]
                         if _trained(m, done[nxt] + 1, stopped)], np.int64).reshape(-1, 2))
    if len(extra) and not (len(extra) == len(allowed) and (extra == allowed).all()):
        i = len(expected)
        raise _table_damaged(path, f"line {i + 2} holds member {got[i, 0]} epoch {got[i, 1]}, "
                                   "beyond the epochs the checkpoints stand behind (was a "
                                   "checkpoint manifest set back to an earlier epoch?)")


def _check_values(path: Path, kept: pd.DataFrame, groups) -> None:
    """The kept rows hold values only a sweep writes: each member's own keys, finite times, a
    training loss that is NaN exactly where the member diverged, diverged for good once it
    did, and fractions within [0, 1]."""
    keys = pd.concat([member_keys(ms) for ms in groups], ignore_index=True).set_index("member")
    want = keys.loc[kept["member"].to_numpy()].reset_index(drop=True)
    got = kept.reset_index(drop=True)

    def refuse(mask, what: str) -> None:
        if mask.any():
            i = int(np.flatnonzero(np.asarray(mask))[0])
            raise _table_damaged(path, f"line {i + 2} (member {got['member'][i]}, epoch "
                                       f"{got['epoch'][i]}) {what}")

    for c in keys.columns:
        if pd.api.types.is_numeric_dtype(want[c]):
            same = got[c].to_numpy(float) == want[c].to_numpy(float)
        else:
            same = got[c].astype(str).to_numpy() == want[c].astype(str).to_numpy()
        refuse(~same, f"has a {c} other than the member's own ({want[c][int(np.argmin(same))]})")
    refuse(~np.isfinite(got["wall_time"].to_numpy(float)) | (got["wall_time"] < 0),
           "has a wall_time that is not a finite number of seconds")
    diverged = got["diverged"].to_numpy(bool)
    loss = got["train_loss"].to_numpy(float)
    refuse(~diverged & ~np.isfinite(loss), "has a non-finite train_loss, yet did not diverge")
    refuse(diverged & ~np.isnan(loss), "diverged, yet has a train_loss")
    refuse(~diverged & ~got["wrong_frac"].between(0, 1).to_numpy(),
           "has a wrong_frac outside [0, 1]")
    for c in ("train_acc", "val_acc", "test_acc"):
        refuse(~(got[c].isna() | got[c].between(0, 1)).to_numpy(), f"has a {c} outside [0, 1]")
    was = got.groupby("member")["diverged"].cummax().to_numpy(bool)
    refuse(was & ~diverged, "has not diverged after an epoch where it had")

