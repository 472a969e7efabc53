"""Command line: ``python -m jebm_lite {train,configs,show} ...``.

Examples::

    python -m jebm_lite configs
    python -m jebm_lite evaluate runs/svhn5_joint-full --mse --fid
    python -m jebm_lite show toy012_joint --profile ci train.max_steps=5
    python -m jebm_lite train toy012_joint --profile cpu --out runs/toy prior_langevin.steps=30
    torchrun --nproc_per_node 2 -m jebm_lite train svhn4_joint --profile full

``CONFIG`` is a preset name (see ``configs``) or a path to a ``config.json`` (e.g. one in a run
directory). Overrides are dotted ``key=value`` pairs, type-checked against the config; mistakes exit
with status 2 and a message, never a traceback. A run directory is resumed from its newest good
checkpoint by default; a finished run is reported, not retrained.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from jebm_lite.config import (
    ExperimentConfig,
    apply_overrides,
    available,
    config_from_json,
    get_config,
    to_dict,
)
from jebm_lite.io import check_writable_dir
from jebm_lite.runtime import CheckpointError, ConfigError, get_device, get_profile
from jebm_lite.training import archive, distributed
from jebm_lite.training.rundir import RunDir
from jebm_lite.training.trainer import TrainingDiverged, TrainingInterrupted

# The data layer, the models and the evaluation are imported inside the commands that use them:
# they pull in torchvision and the networks (about 2 s), which ``configs``, ``show`` and ``--help``
# do not need.

EXIT_USAGE = 2
EXIT_DIVERGED = 3


def resolve_config(config: str, profile: str | None, overrides: list[str]) -> ExperimentConfig:
    """A preset name (with ``profile``) or a path to a config.json, then the overrides."""
    if config in available():
        return get_config(config, profile=profile, overrides=overrides or None)
    path = Path(config)
    if path.is_dir() and (path / "config.json").exists():
        path = path / "config.json"
    if path.is_file():
        try:
            cfg = config_from_json(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON ({e}).") from None
        if profile is not None:
            cfg = apply_overrides(cfg, {"profile": get_profile(profile)})
        return apply_overrides(cfg, overrides) if overrides else cfg
    raise ConfigError(
        f"{config!r} is neither a known experiment ({', '.join(available())}) nor a config.json file."
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jebm_lite", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", metavar="{train,configs,show,evaluate,runs}")

    t = sub.add_parser("train", help="train (or resume) a run")
    t.add_argument("config", help="preset name or path to a config.json")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    t.add_argument("--profile", choices=["ci", "cpu", "full"], default=None,
                   help="settings profile (default: $JEBM_PROFILE, else full with CUDA, cpu without)")
    t.add_argument("--out", default=None, help="run directory (default: runs/<name>-<profile>)")
    t.add_argument("--no-resume", action="store_true",
                   help="refuse to continue a run directory that already has checkpoints")

    sub.add_parser("configs", help="list the experiment presets")
    sub.add_parser("evaluate", help="reconstruction MSE / FID of a run (python -m jebm_lite evaluate -h)")

    r = sub.add_parser("runs", help="pack finished runs into archives, or fetch published ones")
    rsub = r.add_subparsers(dest="runs_command", metavar="{pack,fetch}", required=True)
    rp = rsub.add_parser("pack", help="archive finished run directories (+ manifest.json with sha256)")
    rp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    rp.add_argument("--out", default="dist/runs", help="folder for the archives and manifest.json")
    rf = rsub.add_parser("fetch", help="download a published run into the runs folder")
    rf.add_argument("names", nargs="+", metavar="NAME", help="run names as in the manifest, e.g. toy012_joint-cpu")
    rf.add_argument("--base-url", default=None, help="where the archives are (default: $JEBM_RUNS_URL)")
    rf.add_argument("--runs", default="runs", help="the runs folder (default: runs)")

    s = sub.add_parser("show", help="print the resolved config as JSON")
    s.add_argument("config", help="preset name or path to a config.json")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    s.add_argument("--profile", choices=["ci", "cpu", "full"], default=None)
    return p


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)


def cmd_configs() -> int:
    for name in available():
        cfg = get_config(name, profile="cpu")
        print(f"{name:20s} method={cfg.method:12s} data={cfg.data.name:14s} model={cfg.model.preset}")
    return 0


def cmd_show(args) -> int:
    cfg = resolve_config(args.config, args.profile, args.overrides)
    print(json.dumps(to_dict(cfg), indent=2))
    return 0


def dir_arg(value: str | None, flag: str) -> Path | None:
    """``value`` of a folder option as a Path (None when not given).

    Raises:
        ConfigError: an empty (or blank) value, which ``Path`` would read as the current folder.
    """
    if value is None:
        return None
    if not value.strip():
        raise ConfigError(f"{flag} is empty; name a directory (or leave {flag} out for its default).")
    return Path(value)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings on the command line: one line each (``warning: ...``), not the source line below them."""
    return f"warning: {message}\n"


def cmd_train(args) -> int:
    out = dir_arg(args.out, "--out")  # before the config: a bad --out is refused before anything else
    cfg = resolve_config(args.config, args.profile, args.overrides)
    out = out if out is not None else Path("runs") / f"{cfg.name}-{cfg.profile}"
    rd = RunDir(out)
    if rd.is_finished():
        rd.check_config(cfg)  # a different config for a finished directory is a mistake, say so
        res = rd.read_result()
        if os.environ.get("RANK", "0") == "0":
            print(f"{out} is already finished ({res.get('steps')} steps); nothing to do. "
                  "Use a new --out directory to train again.")
        return 0

    from jebm_lite.data import DataNotFoundError  # imported on use: see the note at the top
    from jebm_lite.training.learners import build_learner
    from jebm_lite.training.load import load_or_train, training_data

    check_writable_dir(out)  # --out naming a file, a folder under a file, or a read-only place

    device = get_device(cfg.train.device)
    distributed.init_from_env(device)
    device = distributed.local_device(device)
    main = distributed.is_main_process()
    try:
        data = training_data(cfg, device)
    except DataNotFoundError as e:
        _err(str(e))
        distributed.cleanup()
        return EXIT_USAGE
    if main:
        print(f"run directory: {out}  (profile {cfg.profile}, device {device}, "
              f"{distributed.world_size()} process(es))")
    try:
        learner, history = load_or_train(cfg, rd, build_learner, data, device=device,
                                         resume=not args.no_resume)
    except DataNotFoundError as e:  # an image file refused while training (too large, unreadable)
        _err(str(e))
        return EXIT_USAGE
    finally:
        distributed.cleanup()
    if main:
        rows = [r for r in history if "event" not in r]
        last = rows[-1] if rows else {}
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in last.items()
                            if k not in ("step", "epoch", "time_s") and isinstance(v, float))
        print(f"finished: {last.get('step', 0)} steps -> {out}  {metrics}")
    return 0


def cmd_runs(args) -> int:
    dir_arg(args.out if args.runs_command == "pack" else args.runs, "--out" if args.runs_command == "pack" else "--runs")
    if args.runs_command == "pack":
        man = archive.pack(args.run_dirs, args.out)
        for name in sorted(man["runs"]):
            e = man["runs"][name]
            print(f"{args.out}/{e['file']}  sha256 {e['sha256'][:16]}...  {e['size'] / 1e6:.1f} MB")
        print(f"{args.out}/{archive.MANIFEST}: publish it with the archives (see book/running.md)")
        return 0
    for name in args.names:
        print(f"{name} -> {archive.fetch(name, args.runs, args.base_url)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 usage/config/data/checkpoint/file error,
    3 training diverged, 130 / 143 stopped by SIGINT / SIGTERM after a checkpoint). Warnings print as one line
    each while it runs."""
    old = warnings.formatwarning
    warnings.formatwarning = _one_line_warning
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    finally:
        warnings.formatwarning = old


def _main(argv: list[str]) -> int:
    if argv[:1] == ["evaluate"]:  # python -m jebm_lite evaluate RUN_DIR ... (see jebm_lite.experiments.evaluate)
        from jebm_lite.experiments.evaluate import main as evaluate_main  # imported on use (see the top)

        return evaluate_main(argv[1:])
    parser = _parser()
    # parse_known_args + re-attaching lets overrides and options come in any order
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command in ("train", "show") and all("=" in a and not a.startswith("-") for a in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "configs":
            return cmd_configs()
        if args.command == "show":
            return cmd_show(args)
        if args.command == "runs":
            return cmd_runs(args)
        return cmd_train(args)
    except (ConfigError, CheckpointError) as e:
        _err(str(e))
        return EXIT_USAGE
    except TrainingDiverged as e:
        _err(str(e))
        return EXIT_DIVERGED
    except TrainingInterrupted as e:  # SIGINT / SIGTERM: a checkpoint was written, the command resumes
        print(f"stopped: {e}", file=sys.stderr)
        return 128 + e.signum
    except OSError as e:  # e.g. the disk filled up outside a checkpoint write
        _err(f"{e.filename or 'a file'}: {e.strerror or e}. Free space or fix the folder, then run the same "
             "command again (a run resumes from its last checkpoint).")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
