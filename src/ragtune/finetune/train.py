"""The training loop, readable top to bottom (after nanoGPT's train.py): load, choose what
trains, estimate_loss, get_lr, the loop with best-validation checkpoint and patience, resume,
test metrics, save.

    train(FinetuneConfig(mode="qa", method="lora"), data_dir="prep/", out_dir="adapter/")

A run survives being killed: at every evaluation (and at least every few minutes) it writes a
checkpoint (trainable weights, optimizer, every RNG state, data position), and the same command
run again continues from it to the same result. Every file is written whole (temp file, then
rename), so a kill during a save leaves the previous checkpoint, never a torn one; results.json
appears last, so its presence means the weights beside it are complete.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import ConfigError, RagtuneError
from .config import FinetuneConfig
from .data import question_key, read_split
from .examples import IGNORE, Tokenized, encode_examples
from .run import BEST, CHECKPOINT, LOG, MANIFEST, RESULTS, TRAINED_ON, weights_dir


@dataclass
class TrainResult:
    out_dir: str
    steps: int
    stopped_early: bool
    best_step: int
    best_val_loss: float
    test_loss: float
    test_perplexity: float
    generation: dict = field(default_factory=dict)  # em, f1, rouge_l, bleu, n
    trainable_params: int = 0
    total_params: int = 0
    tokens_per_s: float = 0.0
    wall_s: float = 0.0
    resumed_from_step: int = 0
    train_examples: int = 0  # labelled examples (or corpus chunks) trained on
    cpu_s: float = 0.0  # CPU seconds of this run (all cores)


# -- model ---------------------------------------------------------------------------------------


def load_base(name: str, quantize: str = "none", device: str = "cpu", dtype=None):
    """Tokenizer, model and folder of the base model: in `dtype` (float32 by default; moved to
    `device` by the caller), or with `quantize='4bit'` already on the GPU in 4-bit NF4 (QLoRA)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..models import resolve_generator

    if quantize == "4bit":
        bnb = _bitsandbytes(device)  # checked before the model is read
    path = resolve_generator(name)
    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if quantize == "4bit":
        return tok, _load_4bit(path, device, bnb), path
    return tok, AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype or "float32"), path


def _bitsandbytes(device: str):
    if not device.startswith("cuda"):
        raise ConfigError(f"quantize='4bit' (QLoRA) needs a CUDA GPU; this run's device is {device!r}")
    try:
        import bitsandbytes
    except ImportError as exc:
        raise ConfigError("quantize='4bit' needs bitsandbytes: pip install 'ragtune[qlora]'") from exc
    return bitsandbytes


def _load_4bit(path, device: str, bnb):
    """QLoRA's base (Dettmers et al. 2023): linear weights in 4-bit NormalFloat with double
    quantisation, computed in bf16 (fp16 on GPUs without it); norms, embeddings and the output
    layer stay in float32 (peft's prepare_model_for_kbit_training)."""
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from ..devices import auto_dtype

    compute = getattr(torch, auto_dtype(device))
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=compute)  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(str(path), quantization_config=quant, device_map={"": device},
                                                 dtype=compute)  # fmt: skip
    # Activations are recomputed (or not) by prepare_memory, non-reentrant: no input gradients needed.
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def decoder_layers(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder().layers


def choose_trainable(model, cfg: FinetuneConfig):
    """LoRA wraps the model; top-layers and full flip requires_grad (one loop, as torchtune does)."""
    if cfg.method == "lora":
        import warnings

        from peft import LoraConfig, get_peft_model

        # peft asks transformers a deprecated question; the answer is right, the warning is noise.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

        n_layers = len(decoder_layers(model))
        if cfg.lora_layers > n_layers:
            raise ConfigError(f"lora_layers={cfg.lora_layers}: the model has only {n_layers} decoder blocks")
        # Only the top blocks adapted: nothing below them needs a gradient, so autograd's backward
        # pass ends at the lowest adapted block.
        top = list(range(n_layers - cfg.lora_layers, n_layers)) if cfg.lora_layers else None
        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.target_modules),
            layers_to_transform=top,
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, lora)
    if cfg.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    layers = decoder_layers(model)
    if cfg.top_layers > len(layers):
        raise ConfigError(f"top_layers={cfg.top_layers}: the model has only {len(layers)} decoder blocks")
    keep = {id(p) for layer in layers[-cfg.top_layers :] for p in layer.parameters()}
    keep |= {id(p) for p in model.get_decoder().norm.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return model


def trainable_state(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model, state: dict) -> None:
    params = dict(model.named_parameters())
    for n, t in state.items():
        params[n].data.copy_(t)


# -- batches and loss ----------------------------------------------------------------------------


def collate(items: Sequence[Tokenized], pad_id: int):
    """Dynamic padding: right-pad to the longest item in this batch only."""
    import torch

    width = max(len(x) for x in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, x in enumerate(items):
        ids[i, : len(x)] = torch.tensor(x.input_ids)
        labels[i, : len(x)] = torch.tensor(x.labels)
        mask[i, : len(x)] = 1
    return ids, mask, labels


def lm_loss(model, ids, mask, labels, autocast=None):
    """Summed next-token loss and the number of target tokens. Logits are computed only at
    positions that have a target: with loss on a few answer tokens, this skips most of the
    49k-vocabulary projection and its memory. `autocast`: a torch dtype to run the model in
    (bfloat16), the loss stays float32. Inputs move to the model's device."""
    import contextlib

    import torch
    import torch.nn.functional as F

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    device = next(base.parameters()).device
    ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
    cast = torch.autocast(device.type, dtype=autocast) if autocast is not None else contextlib.nullcontext()
    with cast:
        hidden = base.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != IGNORE
        logits = base.get_output_embeddings()(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep], reduction="sum"), int(keep.sum())


def training_precision(cfg: FinetuneConfig, device: str):
    """The autocast dtype for `cfg.precision` on `device` (None = float32 throughout)."""
    import torch

    from ..devices import auto_dtype

    if cfg.precision in ("fp32", "base-bf16"):  # base-bf16: the lean LoRA functions cast, not autocast
        return None
    if cfg.precision == "bf16":
        return torch.bfloat16
    # auto: a GPU with bfloat16. Not the CPU: with avx512_bf16 alone one LoRA step on 8 x 512 tokens
    # took 40 s in float32 and over 10 minutes under bf16 autocast; with AMX bf16 is 1.22x float32's
    # tokens/s but learns slower (24 steps: validation loss 1.342 vs 1.320, behind at equal wall time).
    return torch.bfloat16 if device.startswith("cuda") and auto_dtype(device) == "bfloat16" else None


def lean_base_bf16(cfg: FinetuneConfig, device: str) -> bool:
    """Whether lean LoRA runs the frozen base's matmuls in bfloat16: asked for (`base-bf16`), or
    `auto` on a CPU with AMX (1.3x faster steps at the same validation loss, README)."""
    from .. import devices

    if not cfg.lean_lora:
        return False
    return cfg.precision == "base-bf16" or (cfg.precision == "auto" and device == "cpu" and devices.cpu_has_amx())


def prepare_memory(model, cfg: FinetuneConfig) -> None:
    """Gradient checkpointing when asked: each decoder block's activations are recomputed in the
    backward pass instead of kept (non-reentrant, so frozen inputs under LoRA need no tricks), and
    on Linux freed activations go back to the OS (`fixed_mmap_threshold`), so the process's peak is
    what is live. Only then: memory handed back has to be faulted in again at the next step, which
    cost 1.5x the step time on this project's 2-core VM (`benchmarks/train_throughput.py`: LoRA,
    batch 8, 85 vs 129 tokens/s kept, 9.9 vs 14.9 GB) — `keep` is the fast mode, `recompute` the
    frugal one; `keep` switches to handing memory back only when the machine runs short
    (`release_memory_under_pressure`). The setting is process-wide: a later `keep` run in the same
    process keeps it.

    `recompute-mlp` (lean LoRA: each MLP computes gate and up again in its backward pass) halves what
    is kept, but glibc's heap still grew to twice what was live (the forward pass's short-lived
    tensors leave holes between the kept ones): blocks of 8 MB and more therefore come from mmap and
    go back on free — few and large, so their faults cost little, and they leave no holes. LoRA,
    batches of 8 SQuAD examples (up to 512 tokens), base-bf16: 292 tokens/s at 7.1 GB peak RSS
    without it, 236 at 5.2 GB with it."""
    if cfg.activation_mode == "recompute-mlp":
        fixed_mmap_threshold(LARGE_BLOCK)
    if cfg.activation_mode == "recompute":
        fixed_mmap_threshold()
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x
            base.activation_checkpointing_enable({"use_reentrant": False}, every_n_layers=cfg.recompute_every)
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.recompute_every > 1:
            # Under transformers 5.17 (a GPU machine's) every block recomputed whatever was asked:
            # each block's flag is set here, the same way on every version (5.25 keeps i % n == 0).
            for i, layer in enumerate(decoder_layers(model)):
                if hasattr(layer, "gradient_checkpointing"):
                    layer.gradient_checkpointing = i % cfg.recompute_every == 0
        base.config.use_cache = False


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
LARGE_BLOCK = 8 * 1024 * 1024  # recompute-mlp: blocks this large come from mmap
RELEASE_AT = 0.7  # `keep` hands freed memory back once the process holds this share of the machine's


def memory_share() -> float | None:
    """The share of the machine's memory this process holds: resident / (resident + available).
    None where /proc does not say (not Linux)."""
    try:
        resident = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        available = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return resident / max(resident + available, 1)


def release_memory_under_pressure(threshold: float = RELEASE_AT) -> float | None:
    """Under `activations=keep`, after a step: once the process holds more than `threshold` of the
    machine's memory, freed memory goes back to the OS from then on (`fixed_mmap_threshold`) and the
    heap's free pages now (`malloc_trim`): slower steps rather than swapping. The share it held when
    it did (the step's log line records it), else None."""
    import ctypes

    share = memory_share()
    if share is None or share <= threshold or not fixed_mmap_threshold():
        return None
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc: fixed_mmap_threshold just took its mallopt
    return share


def fixed_mmap_threshold(threshold: int = 128 * 1024) -> bool:
    """Serve allocations of `threshold` bytes and more with mmap, returned to the OS on free.
    glibc's default raises the threshold each time such a block is freed (up to 32 MB), after which
    activation-sized tensors come from the heap and their freed space stays in the process: one
    LoRA step on 8 x 512 tokens with recomputed activations peaked at 6.1 GB of RSS where 1.1 GB
    was live. Process-wide; a no-op (False) outside glibc."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):  # musl and others: no libc.so.6 or no mallopt
        return False


def estimate_loss(model, data: Sequence[Tokenized], batch_size: int, pad_id: int, max_batches: int = 0) -> float:
    """Mean per-token loss over `data` (the first `max_batches` batches if set)."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for b, start in enumerate(range(0, len(data), batch_size)):
            if max_batches and b >= max_batches:
                break
            loss, n = lm_loss(model, *collate(data[start : start + batch_size], pad_id))
            total, count = total + float(loss), count + n
    model.train()
    return total / max(count, 1)


def get_lr(step: int, total: int, cfg: FinetuneConfig) -> float:
    """Linear warm-up, then cosine or linear decay to a tenth of the peak (or constant)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    decay = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress
    return cfg.lr * (0.1 + 0.9 * decay)


def epoch_order(data: Sequence[Tokenized], batch: int, seed: int) -> list[int]:
    """A seeded shuffle in which each batch holds examples of similar length: shuffle, sort
    within windows of 16 batches, then shuffle the batches. Less padding means fewer wasted
    tokens; batches stay random across the epoch. (Built lazily, RAFT examples have no length
    yet, and their prompts are about equally long anyway: plain shuffle.)"""
    rng = random.Random(seed)
    order = list(range(len(data)))
    rng.shuffle(order)
    if not isinstance(data, list):
        return order
    window = batch * 16
    grouped = []
    for start in range(0, len(order), window):
        grouped.extend(sorted(order[start : start + window], key=lambda i: len(data[i])))
    batches = [grouped[i : i + batch] for i in range(0, len(grouped), batch)]
    rng.shuffle(batches)
    return [i for b in batches for i in b]


# -- checkpoints ---------------------------------------------------------------------------------

CHECKPOINT_EVERY_S = 300.0  # a checkpoint at least this often, evaluations or not


def _atomic_save(obj, path: Path) -> None:
    import torch

    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def rng_states() -> dict:
    """Every random stream training draws from (dropout, shuffles), to resume exactly."""
    import numpy as np
    import torch

    states = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(states["torch"])
    if "python" in states:
        random.setstate(states["python"])
    if "numpy" in states:
        np.random.set_state(states["numpy"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _load_best(path: Path) -> tuple[int | None, dict | None]:
    """(step, trainable state) of the best-validation file; (None, state) for files without a step."""
    import torch

    if not path.is_file():
        return None, None
    data = torch.load(path, weights_only=False, map_location="cpu")
    if isinstance(data, dict) and set(data) == {"step", "trainable"}:
        return data["step"], data["trainable"]
    return None, data


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log lines of steps up to the checkpoint's (a resumed run writes the later ones again)."""
    keep = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue  # torn by a kill
    _atomic_write(path, "".join(keep))


Progress = Callable[[int, int, float, float], None]  # step, total, train loss, tokens/s


class DataParallel:
    """Data-parallel training across the processes of a torch.distributed group (Ray Train starts
    one per worker): every worker takes its share of each optimizer step's examples, and the
    gradients are summed across workers before the step, so every worker takes the same step a
    single process would (up to float summation order) and the parameters stay identical. Only
    the first worker writes files. Without a group: one process, nothing to share."""

    def __init__(self):
        import torch.distributed as dist

        self.on = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.rank = dist.get_rank() if self.on else 0
        self.world = dist.get_world_size() if self.on else 1

    @property
    def lead(self) -> bool:
        return self.rank == 0

    def share(self, items: Sequence) -> Sequence:
        return items[self.rank :: self.world] if self.on else items

    def sum_grads(self, params: Sequence) -> None:
        """One all-reduce of every trainable gradient, flattened (a worker with no examples adds zeros)."""
        if not self.on:
            return
        import torch
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(g).clone()
            offset += n

    def sum(self, *values: float) -> list[float]:
        if not self.on:
            return list(values)
        import torch
        import torch.distributed as dist

        on = "cuda" if dist.get_backend() == "nccl" else "cpu"  # nccl reduces GPU tensors only
        t = torch.tensor(values, dtype=torch.float64, device=on)
        dist.all_reduce(t)
        return t.tolist()


def train(
    cfg: FinetuneConfig,
    data_dir: str | Path,
    out_dir: str | Path,
    index: str | Path | None = None,
    progress: Progress | None = None,
    stop_after: int = 0,  # testing hook: return (as if killed) after this many optimizer steps
) -> TrainResult:
    import torch

    data_dir, out = Path(data_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    c_start = time.process_time()
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)

    from ..devices import resolve_device

    device = resolve_device()
    dp = DataParallel()
    autocast = training_precision(cfg, device)
    # LoRA under autocast on a GPU: every matmul reads its weights in bf16 anyway, so the frozen
    # base is held in bf16 (half the memory); the LoRA weights stay float32 (peft upcasts adapters).
    half_base = cfg.method == "lora" and autocast is not None and device.startswith("cuda")
    tok, model, base_path = load_base(cfg.base_model, cfg.quantize, device, autocast if half_base else None)
    model = choose_trainable(model, cfg)
    if cfg.quantize == "none":
        model = model.to(device)
    prepare_memory(model, cfg)
    if cfg.lean_lora:
        import torch

        from .lean import enable

        base_dtype = torch.bfloat16 if lean_base_bf16(cfg, device) else None
        enable(model, base_dtype=base_dtype, recompute_mlp=cfg.activation_mode == "recompute-mlp")
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())
    log_path = out / LOG

    retriever = None  # the Index RAFT examples retrieve from (reader examples without a passage: their document)
    if cfg.mode == "raft" and index is None:
        raise ConfigError("mode='raft' needs --index DIR (the gold chunk and distractors come from it)")
    if cfg.mode in ("raft", "reader") and index is not None:
        from ..index import Index

        retriever = Index.open(index)
    splits = {s: read_split(data_dir / f"{s}.jsonl") for s in ("train", "validation", "test")}
    if not splits["train"]:
        raise RagtuneError(f"{data_dir / 'train.jsonl'} holds no examples")
    if dp.lead:  # what it trained on, so that no gate is calibrated on those questions later
        keys = sorted({question_key(e.question) for e in splits["train"] if e.kind == "qa" and e.question})
        _atomic_write(out / TRAINED_ON, json.dumps({"questions": keys}))
    train_set = encode_examples(splits["train"], tok, cfg, retriever, seed=cfg.seed)
    val_set = encode_examples(splits["validation"] or splits["train"][:32], tok, cfg, retriever, seed=cfg.seed + 1)
    test_set = encode_examples(splits["test"], tok, cfg, retriever, seed=cfg.seed + 2)

    steps_per_epoch = math.ceil(len(train_set) / (cfg.batch_size * cfg.grad_accum))
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )

    # Resume from the last checkpoint of the same configuration, if there is one.
    state = {
        "step": 0,
        "epoch": 0,
        "pos": 0,
        "best_val": float("inf"),
        "best_step": 0,
        "bad_evals": 0,
        "tokens": 0,
        "train_s": 0.0,
    }
    ckpt_path, best_path = out / CHECKPOINT, out / BEST
    resumed = 0
    for name in (CHECKPOINT, BEST, RESULTS, MANIFEST, LOG):  # temp files a kill left behind mid-save
        if dp.lead:
            out.joinpath(f".{name}.tmp").unlink(missing_ok=True)
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False, map_location="cpu")
        if ckpt["fingerprint"] != cfg.fingerprint():
            raise ConfigError(
                f"{out} holds a checkpoint of a different configuration; use another --out or delete {ckpt_path}"
            )
        load_trainable_state(model, ckpt["trainable"])
        opt.load_state_dict(ckpt["optimizer"])
        set_rng_states(ckpt.get("rng") or {"torch": ckpt["torch_rng"]})
        state = ckpt["state"]
        resumed = state["step"]
        # The checkpoint is written before the best-validation file: a kill between the two leaves
        # the checkpoint's own weights as the best ones.
        best_step, _ = _load_best(best_path)
        if dp.lead and state["best_step"] and best_step != state["best_step"] and state["best_step"] == state["step"]:
            _atomic_save({"step": state["step"], "trainable": ckpt["trainable"]}, best_path)
        if dp.lead:
            _truncate_log(log_path, state["step"])
    elif dp.lead:
        log_path.write_text("")
        best_path.unlink(missing_ok=True)  # an earlier run's
    if dp.lead:
        (out / RESULTS).unlink(missing_ok=True)  # this run is not finished: results.json is written last
        _atomic_write(
            out / MANIFEST,
            json.dumps(
                {
                    "config": asdict(cfg),
                    "base_model_path": str(base_path),
                    "trainable_params": n_train,
                    "total_params": n_total,
                    "workers": dp.world,
                },
                indent=2,
            ),
        )
    last_save = time.monotonic()
    trainable = [p for p in model.parameters() if p.requires_grad]

    def save_checkpoint() -> None:
        nonlocal last_save
        if not dp.lead:
            return
        _atomic_save(
            {
                "fingerprint": cfg.fingerprint(),
                "trainable": trainable_state(model),
                "optimizer": opt.state_dict(),
                "rng": rng_states(),
                "state": dict(state),
            },
            ckpt_path,
        )
        last_save = time.monotonic()

    def log(rec: dict) -> None:
        if not dp.lead:
            return
        with log_path.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()

    model.train()
    stopped_early = False
    steps_this_run = 0
    released = False  # `keep` hands memory back to the OS only once the machine runs short
    while state["step"] < total and not stopped_early:
        order = epoch_order(train_set, cfg.batch_size * cfg.grad_accum, cfg.seed * 1000 + state["epoch"])
        while state["pos"] < len(order) and state["step"] < total:
            t0 = time.perf_counter()
            lr = get_lr(state["step"], total, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            loss_sum, tok_count = 0.0, 0
            step_items = order[state["pos"] : state["pos"] + cfg.batch_size * cfg.grad_accum]
            seen = len(step_items)
            n_targets = sum(sum(1 for l in train_set[j].labels[1:] if l != IGNORE) for j in step_items)
            mine = dp.share(step_items)  # all of them in one process
            micro = [mine[i : i + cfg.batch_size] for i in range(0, len(mine), cfg.batch_size)]
            for m in micro:
                ids, mask, labels = collate([train_set[j] for j in m], tok.pad_token_id)
                loss, n = lm_loss(model, ids, mask, labels, autocast)
                (loss / max(n_targets, 1)).backward()  # mean over all target tokens of the step
                loss_sum += float(loss.detach())
                tok_count += int(mask.sum())
            dp.sum_grads(trainable)
            loss_sum, tok_count = dp.sum(loss_sum, tok_count)
            tok_count = int(tok_count)
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            freed = None
            if cfg.activation_mode != "recompute" and not released:
                freed = release_memory_under_pressure()
                released = freed is not None
            state["pos"] += seen
            state["step"] += 1
            steps_this_run += 1
            dt = time.perf_counter() - t0
            state["tokens"] += tok_count
            state["train_s"] += dt
            train_loss = loss_sum / max(n_targets, 1)
            rec = {
                "step": state["step"],
                "epoch": state["epoch"],
                "train_loss": round(train_loss, 5),
                "lr": lr,
                "tokens_per_s": round(tok_count / dt, 1),
            }
            if freed is not None:
                rec["memory_released_at"] = round(freed, 3)  # the share of the machine's memory held
            if state["step"] % cfg.eval_every == 0 or state["step"] == total:
                val = estimate_loss(model, val_set, cfg.batch_size, tok.pad_token_id, cfg.eval_batches)
                rec["val_loss"] = round(val, 5)
                improved = val < state["best_val"]
                if improved:
                    state.update(best_val=val, best_step=state["step"], bad_evals=0)
                else:
                    state["bad_evals"] += 1
                    stopped_early = state["bad_evals"] >= cfg.patience
                    rec["early_stop"] = stopped_early
                save_checkpoint()  # first: it alone can restore best.pt if a kill comes between the two
                if improved and dp.lead:  # one writer: two would race on the temporary file
                    _atomic_save({"step": state["step"], "trainable": trainable_state(model)}, best_path)
            elif time.monotonic() - last_save > CHECKPOINT_EVERY_S:
                save_checkpoint()
            log(rec)
            if progress and dp.lead:
                progress(state["step"], total, train_loss, tok_count / dt)
            if stopped_early:
                break
            if stop_after and steps_this_run >= stop_after:
                save_checkpoint()
                return TrainResult(
                    str(out),
                    state["step"],
                    False,
                    state["best_step"],
                    state["best_val"],
                    float("nan"),
                    float("nan"),
                    resumed_from_step=resumed,
                )
        if state["pos"] >= len(order):
            state["epoch"] += 1
            state["pos"] = 0

    if not dp.lead:  # the first worker evaluates and writes the artefacts
        return TrainResult(str(out), state["step"], stopped_early, state["best_step"], state["best_val"],
                           float("nan"), float("nan"), resumed_from_step=resumed)  # fmt: skip
    # The best validation checkpoint is what we keep (early stopping's point).
    _, best = _load_best(best_path)
    if best is not None:
        load_trainable_state(model, best)
    test_loss = (
        estimate_loss(model, test_set, cfg.batch_size, tok.pad_token_id, cfg.eval_batches) if test_set else float("nan")
    )
    generation = (
        evaluate_generation(model, tok, splits["test"], cfg, retriever)
        if cfg.mode in ("qa", "raft", "reader") and splits["test"] and cfg.generate_max
        else {}
    )
    save_model(model, tok, out, cfg)
    result = TrainResult(
        str(out),
        state["step"],
        stopped_early,
        state["best_step"],
        state["best_val"],
        test_loss,
        math.exp(min(test_loss, 50)) if test_loss == test_loss else float("nan"),
        generation,
        n_train,
        n_total,
        state["tokens"] / max(state["train_s"], 1e-9),
        time.perf_counter() - t_start,
        resumed,
        len(splits["train"]),
        time.process_time() - c_start,
    )
    _atomic_write(out / RESULTS, json.dumps(asdict(result), indent=2))
    ckpt_path.unlink(missing_ok=True)  # finished: the next run of this command starts afresh
    return result


def save_model(model, tok, out: Path, cfg: FinetuneConfig) -> Path:
    """LoRA -> PEFT adapter folder; top-layers/full -> a whole model folder; both safetensors.
    Written beside the target, then swapped in: a kill never leaves a half-written weights folder."""
    import shutil

    target = out / weights_dir(cfg.method)
    tmp, old = target.with_name(target.name + ".tmp"), target.with_name(target.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def evaluate_generation(model, tok, examples, cfg: FinetuneConfig, retriever=None) -> dict:
    """EM, token F1, ROUGE-L and BLEU on up to `generate_max` test examples, greedy."""
    from ..evaluation.metrics import corpus_bleu, exact_match, f1_score, rouge_l
    from ..generators import TransformersGenerator
    from ..rag import Pipeline

    examples = list(examples)[: cfg.generate_max]
    gen = TransformersGenerator.from_loaded(model, tok, name="finetuned")
    if cfg.mode == "reader":  # reading the answer's sentence, as it was trained (rag then picks among its spans)
        from .examples import reader_example

        preds = gen.generate([reader_example(e, retriever)[0] for e in examples], 32)
    else:
        # raft is judged the way it is used: on what the retriever finds, not on planted gold chunks.
        answers = Pipeline(retriever if cfg.mode == "raft" else None, gen).answer_batch([e.question for e in examples])
        preds = [a.text for a in answers]
    golds = [list(e.answers) or [e.answer] for e in examples]
    n = max(len(examples), 1)
    return {
        "n": len(examples),
        "em": 100 * sum(exact_match(p, g) for p, g in zip(preds, golds)) / n,
        "f1": 100 * sum(f1_score(p, g) for p, g in zip(preds, golds)) / n,
        "rouge_l": 100 * sum(rouge_l(p, g) for p, g in zip(preds, golds)) / n,
        "bleu": corpus_bleu(preds, golds),
        "samples": [
            {"question": e.question, "gold": g[0], "prediction": p}
            for e, g, p in list(zip(examples, golds, preds))[:10]
        ],
    }
