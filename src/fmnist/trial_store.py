"""Finished trials, kept: what makes an experiment or a sweep resumable.

    store = TrialStore(out / TRIALS_DIR, data_fingerprint(dataset))
    results = run_trials(trials, store=store)  # a rerun after a kill runs only the missing trials

Each finished trial's result is written (atomically) as it finishes, under a digest of everything
that decides it; a rerun after a kill runs only the trials that have no result yet, and reads the
others back unchanged, so it reports the same numbers as a run never interrupted.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from fmnist import runs

if TYPE_CHECKING:
    from fmnist.trials import Trial

TRIALS_DIR = ".trials"  # under an experiment's or sweep's folder: trials finished so far (a rerun continues)
STORE_FORMAT = 1  # bump when a stored result's layout changes: older results are then run again
KEY_HEX = 24  # hex digits of a trial's key (96 bits of SHA-256): its result's file name


def data_fingerprint(dataset: tuple) -> str:
    """SHA-256 of the arrays a trial trains and tests on: a result is reused only on the same data."""
    digest = hashlib.sha256()
    for array in (a for split in dataset for a in split):
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(memoryview(array).cast("B") if array.flags.c_contiguous else array.tobytes())
    return digest.hexdigest()


class TrialStore:
    """Finished trials' results in ``folder``, one JSON file each, named by the trial's key.

    The key is a digest of everything that decides a result: the full TrainConfig (seed included),
    what the trial measures (test_at, check_only, whether it keeps a run directory) and the data's
    fingerprint. A changed setting is therefore a new trial, never a stale result. A result is
    written to a temporary name and renamed, so a kill leaves either the whole file or none.
    ``hits``/``writes`` count the results this store served and kept.
    """

    def __init__(self, folder: Path, data: str = ""):
        self.folder, self.data = Path(folder), data
        self.hits = self.writes = 0

    def identity(self, trial: Trial) -> dict:
        """What decides ``trial``'s result, JSON-normalised (tuples as lists)."""
        what = {"config": trial.config.to_dict(), "test_at": list(trial.test_at), "check_only": trial.check_only,
                "keeps_run": trial.run_dir is not None, "data": self.data, "format": STORE_FORMAT}  # fmt: skip
        return json.loads(json.dumps(what))

    def key(self, trial: Trial) -> str:
        canonical = json.dumps(self.identity(trial), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:KEY_HEX]

    def path(self, trial: Trial) -> Path:
        return self.folder / f"{self.key(trial)}.json"

    def get(self, trial: Trial) -> dict | None:
        """The kept result of ``trial``; None when there is none (or it is unreadable, or its run directory is gone)."""
        if trial.run_dir is not None and not (Path(trial.run_dir) / runs.CONFIG_FILE).is_file():
            return None
        try:
            saved = json.loads(self.path(trial).read_text("utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(saved, dict) or saved.get("trial") != self.identity(trial) or "result" not in saved:
            return None
        self.hits += 1
        return saved["result"]

    def put(self, trial: Trial, result: dict) -> Path:
        self.writes += 1
        return runs.write_json(self.path(trial), {"trial": self.identity(trial), "result": result})

    def clear(self) -> None:
        """Forget every kept result: the job is complete (an experiment's report is written), or ``--restart``."""
        shutil.rmtree(self.folder, ignore_errors=True)
