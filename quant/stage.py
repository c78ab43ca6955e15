"""The train and export stages of a build (``flipq.pipeline`` lists the stages and calls these).

``stage_train(cfg)`` trains the plan's network in ``cfg.out`` and resumes a checkpoint already
there; ``stage_export(cfg)`` exports the trained network as QONNX and runs the export on the
stage-check rows. Every artifact is replaced atomically (``flipq.host.files``).

Rerunning ``flipq train`` with the same command is always safe: a checkpoint that holds fewer
epochs than ``--epochs`` is resumed, one that holds exactly as many is left alone, and one that
holds more, was trained with other settings or for another architecture is refused before
anything in the folder is rewritten.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from flipq.host.bitplan import BitPlan, BitPlanError
from flipq.host.files import replacing, write_json

# Fields that change what a checkpoint means; the others (progress, io_type) do not.
TRAINING_FIELDS = ("dataset", "data_path", "arch", "plan", "batch_size", "lr", "seed", "flip", "float_epochs",
                   "weight_scale", "planes_aware", "planes_full_share")


class StaleBuildError(ValueError):
    """The build folder holds a checkpoint trained with a different configuration."""


class CheckpointEpochsError(ValueError):
    """The checkpoint already holds more epochs than the run asks for."""


class CheckpointMismatchError(ValueError):
    """The checkpoint's weights do not fit the network the configuration builds."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message names the last checkpoint and how to resume.

    A KeyboardInterrupt, so whatever handles Ctrl-C handles it (the command line: one line on
    stderr, exit status 130)."""

    exit_code = 130


def check_resumable(cfg) -> None:
    """Raise :class:`StaleBuildError` when ``cfg.out`` holds a checkpoint whose saved
    config.json differs from ``cfg`` in a field that changes what the checkpoint means."""
    ckpt = cfg.folder / "checkpoint.pt"
    saved = cfg.folder / "config.json"
    if not ckpt.is_file() or not saved.is_file():
        return
    try:
        old = {**type(cfg).LEGACY_DEFAULTS, **json.loads(saved.read_text())}
    except ValueError as e:
        raise ValueError(f"{saved}: corrupt build config ({e}); use --fresh to discard the build") from e
    diff = [f"{k}: {old.get(k)!r} -> {getattr(cfg, k)!r}" for k in TRAINING_FIELDS
            if old.get(k) != getattr(cfg, k)]
    if diff:
        raise StaleBuildError(
            f"{ckpt} was trained with another configuration ({'; '.join(diff)}); "
            "use a new --out folder or --fresh to discard it")


def check_checkpoint_fits(model, state: dict, ckpt: Path, arch: str) -> None:
    """Raise :class:`CheckpointMismatchError` unless the checkpoint holds a weight of the same
    shape for every weight of ``model`` (and no others): a checkpoint of another architecture
    would otherwise fail inside ``load_state_dict``."""
    def weights(sd) -> dict:
        return {k: tuple(v.shape) for k, v in sd.items() if k.endswith(".weight")}

    have, want = weights(state.get("model", {})), weights(model.state_dict())
    if have != want:
        odd = sorted(set(have) ^ set(want)) or [k for k in want if have[k] != want[k]]
        raise CheckpointMismatchError(
            f"{ckpt} does not match architecture '{arch}' (weight '{odd[0]}' differs); "
            "use --fresh to discard it, or another --out folder")


def stage_train(cfg) -> None:
    """Train the plan's network (optionally from a float twin, optionally with flip-based
    extra-bit allocation); writes config.json, data.npz (the test split), checkpoint.pt (every
    epoch), plan.toml (with per-group widths after flip) and train.json."""
    from flipq.quant.archs import default_plan
    from flipq.quant.data import load_dataset
    from flipq.quant.layout import layer_shapes
    from flipq.quant.networks import build_network, check_trainable_options
    from flipq.quant.train import TrainConfig, load_checkpoint, train

    t0 = time.perf_counter()
    ckpt = cfg.folder / "checkpoint.pt"
    check_resumable(cfg)
    tcfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                       threads=cfg.threads, progress=cfg.progress)  # refuses bad values before any write
    if cfg.planes_aware and cfg.flip is not None:
        raise ValueError("--planes-aware and --flip together are not supported: flip allocation changes layer widths "
                         "during training; train with one of them")
    check_trainable_options(cfg.arch, flip=cfg.flip is not None, float_epochs=cfg.float_epochs,
                            weight_scale=cfg.weight_scale)
    flip_cfg = None
    if cfg.flip is not None:
        from flipq.quant.flipconfig import FlipConfig

        flip_cfg = FlipConfig.from_dict(cfg.flip)
        flip_cfg.allocation_epochs(cfg.epochs)  # an allocation epoch past the run fails here, not after a write
    ds = load_dataset(cfg.dataset, cfg.data_path, seed=cfg.seed)
    plan = BitPlan.load(cfg.plan) if cfg.plan else default_plan(cfg.arch)
    model = build_network(cfg.arch, ds.input_shape, plan, ds.num_classes, ds.signed_input, cfg.weight_scale)
    plan.check_shapes(layer_shapes(model))
    _check_trainable(plan, cfg.plan)
    done = 0
    if ckpt.is_file():
        state = load_checkpoint(ckpt)
        check_checkpoint_fits(model, state, ckpt, cfg.arch)
        done = int(state["epoch"]) + 1
        if done > cfg.epochs:
            raise CheckpointEpochsError(
                f"{ckpt} already holds {done} epochs, more than --epochs {cfg.epochs}: pass --epochs {done} "
                "or more to keep it, or --fresh to discard it")
        if done < cfg.epochs:
            print(f"train: resuming {ckpt} at epoch {done + 1} of {cfg.epochs}")
        elif all((cfg.folder / f).is_file() for f in ("plan.toml", "train.json")):
            print(f"train: {ckpt} already trained {done} epochs; nothing to do")
            return
        else:  # interrupted between the last checkpoint and the artifacts after it
            print(f"train: {ckpt} already trained {done} epochs; writing plan.toml and train.json")
    cfg.folder.mkdir(parents=True, exist_ok=True)
    write_json(cfg.folder / "config.json", asdict(cfg))
    with replacing(cfg.folder / "data.npz") as tmp:
        np.savez(tmp, x_test=ds.x_test, y_test=ds.y_test)
    info: dict = {"input_shape": list(ds.input_shape), "num_classes": ds.num_classes,
                  "signed_input": ds.signed_input}
    try:
        if cfg.float_epochs and not ckpt.is_file():
            from flipq.quant.models import FloatNet, copy_mac_weights, get_arch

            twin = FloatNet(get_arch(cfg.arch), ds.input_shape, ds.num_classes)
            fh = train(twin, ds, TrainConfig(epochs=cfg.float_epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                                             seed=cfg.seed, threads=cfg.threads, progress=cfg.progress))
            info["float_accuracy"] = fh["test_accuracy"][-1]
            copy_mac_weights(twin, model)
        if flip_cfg is not None:
            from flipq.quant.flip import train_flip
            from flipq.quant.flipplot import plot_allocation
            from flipq.quant.storage import stored_weight_bits

            history, plan = train_flip(model, ds, tcfg, flip_cfg, checkpoint=ckpt)
            fractions = history.get("flip", {}).get("fractions", {})
            with replacing(cfg.folder / "flip_allocation.png") as tmp:
                plot_allocation(plan, tmp, {n: f["weights"] for n, f in fractions.items()} or None)
            info["stored_weight_bits"] = stored_weight_bits(plan, model)
        elif cfg.planes_aware:
            from flipq.quant.planesaware import PlanesAware

            hook = PlanesAware(model, cfg.planes_aware, seed=cfg.seed, full_share=cfg.planes_full_share)
            try:
                history = train(model, ds, tcfg, checkpoint=ckpt, hooks=(hook,))
            finally:
                hook.close()
            history["planes_drawn"] = {str(k): v for k, v in sorted(hook.drawn.items())}
            info["planes_aware"] = {"lowest": cfg.planes_aware, "highest": hook.top, "full_share": cfg.planes_full_share}
        else:
            history = train(model, ds, tcfg, checkpoint=ckpt)
    except KeyboardInterrupt:
        raise TrainingInterrupted(_interrupted_message(ckpt, cfg.epochs)) from None
    plan.save(cfg.folder / "plan.toml")
    write_json(cfg.folder / "train.json", {"seconds": time.perf_counter() - t0, "history": history, **info})


def _check_trainable(plan: BitPlan, source: str | None) -> None:
    """Per-group widths are what flip allocation writes after training; a network cannot start
    from them (the wider layers' frozen scale exists only in a checkpoint)."""
    grouped = [lb.name for lb in plan if lb.group_bits is not None]
    if grouped:
        raise BitPlanError(
            f"{source or 'the plan'}: layer '{grouped[0]}' has per-group widths (group_bits), which "
            "training cannot start from; train the base plan without group_bits (add --flip to "
            "allocate extra bits)")


def _interrupted_message(ckpt: Path, epochs: int) -> str:
    from flipq.quant.train import load_checkpoint

    if not ckpt.is_file():
        return "training interrupted before its first epoch ended; nothing was saved"
    done = int(load_checkpoint(ckpt)["epoch"]) + 1
    return (f"training interrupted: {ckpt} holds epoch {done} of {epochs}; "
            "rerun the same command to resume")


def trained_model(cfg):
    """The trained network of ``cfg.out`` in eval mode, with its plan (checked against the
    network's layer shapes) and train.json."""
    from flipq.quant.layout import layer_shapes
    from flipq.quant.networks import build_network
    from flipq.quant.train import load_checkpoint, load_model_state

    info = json.loads(cfg.need("train.json", "train").read_text())
    plan = BitPlan.load(cfg.need("plan.toml", "train"))
    model = build_network(cfg.arch, tuple(info["input_shape"]), plan, info["num_classes"],
                          info["signed_input"], cfg.weight_scale)
    plan.check_shapes(layer_shapes(model))
    ckpt = cfg.need("checkpoint.pt", "train")
    state = load_checkpoint(ckpt)
    check_checkpoint_fits(model, state, ckpt, cfg.arch)
    load_model_state(model, state, ckpt)
    model.eval()
    return model, plan, info


def stage_export(cfg) -> None:
    """Export the trained network as QONNX (model.onnx, the plan in its metadata) and run
    Brevitas and the QONNX executor on the stage-check rows (outputs/torch.npy, qonnx.npy)."""
    from flipq.hls.prepare import load_qonnx, prepare_qonnx
    from flipq.quant.export import execute_qonnx, export_model
    from flipq.quant.train import evaluate

    t0 = time.perf_counter()
    model, plan, info = trained_model(cfg)
    x, _ = cfg.check_split()
    path = export_model(model, tuple(info["input_shape"]), cfg.folder / "model.onnx", plan)
    t1 = time.perf_counter()
    out_torch, _ = evaluate(model, x)
    prepared = prepare_qonnx(load_qonnx(path))
    out_qonnx = execute_qonnx(prepared, _channels_last(x), progress=cfg.progress)
    for name, values in (("torch", out_torch), ("qonnx", out_qonnx)):
        with replacing(cfg.outputs_dir() / f"{name}.npy") as tmp:
            np.save(tmp, values)
    write_json(cfg.folder / "export.json", {"seconds": time.perf_counter() - t0, "check_rows": int(len(x)),
                                            "seconds_check": time.perf_counter() - t1})


def _channels_last(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 2, 3, 1) if x.ndim == 4 else x
