"""Sharma's layer probes: what each layer of a source network keeps of new classes.

A network trained on the known classes (task A) is probed with images of the
known and of the unknown classes (task B), layer by layer, three ways:

1. spread: how scattered each class is in the layer's activation space, with a
   t-SNE map of the same activations for the eye;
2. gradient inversion: an input optimised from noise until its activation at
   the layer matches a real image's, for the trained network and for a random
   one of the same shape (Sharma's first table);
3. decoders: a small network per layer, trained on known classes only with the
   probed network frozen, that reconstructs the input from the layer's
   activation (Sharma's second table).

The probe sizes come from the `diagnostics` params section (`DiagnosticsParams`):
`images_per_class` test images of each class feed the spread, t-SNE and decoder
probes, the first `inversion_images_per_class` of them (0 = all) the gradient
inversion, the slowest probe. `cpu_threads` (0 = leave the process's setting)
bounds torch's and sklearn's CPU threads during the run: the probes' tensors
are tiny, so extra threads mostly wait for each other (on a busy machine two
threads ran 8x slower than one), and a fixed count keeps the numbers
independent of the machine's core count. The verdict per layer is the rule fitted
on the sweep, in the report (`transferlab.report.transferability.probe_verdicts`).
Only the `TransferableNet` contract (`layer_names`, `activations`) is used, so any
architecture works.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from transferlab.config.params import DiagnosticsParams, Params
from transferlab.data.prepared import TaskData
from transferlab.metrics import class_mean
from transferlab.models.base import TransferableNet
from transferlab.progress import progress_bar
from transferlab.training.loop import to_tensor

SPREAD_MEASURE = (
    "spread ratio: a class's mean pairwise Euclidean distance between its images' activations "
    "(flattened layer output), divided by the average of that figure over the known classes; "
    "1 = as spread as an average known class, > 1 = more spread")
INVERSION_MEASURE = (
    "gradient inversion: input optimised from noise with Adam until its activation at the layer "
    "matches the real image's; MSE between the optimised and the real input in the normalised "
    "input space [-1, 1], mean over the class's images")
MLP_DECODER = (
    "an MLP (linear when decoder_hidden = 0) from the layer's flattened activation to the "
    "flattened input")
CONV_DECODER = (
    "for a layer with a (C, h, w) map, a convolutional decoder (its map centred per channel "
    "and scaled by its RMS; a 3x3 convolution, stride-2 4x4 transposed convolutions while the "
    "map can double without outgrowing the image, a bilinear resize to the image's size, a "
    "3x3 convolution and a 3x3 convolution to the image's channels, ReLU between them, "
    "decoder_channels channels); for a flat layer ") + MLP_DECODER
DECODER_TEXT = {"mlp": MLP_DECODER, "conv": CONV_DECODER}
DECODER_REST = (
    ", trained on the known classes' training images with the network frozen; MSE of its "
    "reconstruction in the normalised input space [-1, 1] on test images, mean over the "
    "class's images; column `input`: the same decoder fed the input itself, the error that "
    "comes from the decoder having seen only known classes")
DECODER_INPUTS = {
    "mlp": "",
    "conv": (" (the convolutional decoder, fed the image; column `input (mlp)`, present when "
             "a probed layer is flat: the MLP fed the flattened image, those layers' baseline)"),
}
DECODER_GAP_MEASURE = (
    "decoder gap: mean decoder error of the unknown classes minus that of the known classes, "
    "less the same difference for the `input` decoder of the same kind; 0 = the layer loses "
    "no more about unknown classes than a decoder trained on known classes loses anyway")


def decoder_measure(choice: str) -> str:
    """The decoder measure's text for `diagnostics.decoder` = `choice`."""
    return "decoder: " + DECODER_TEXT[choice] + DECODER_REST + DECODER_INPUTS[choice]


# ---------------------------------------------------------------------------
# Probes on arrays and tensors (each usable on its own)
# ---------------------------------------------------------------------------

def spread_ratios(acts: np.ndarray, labels: list[str], known: list[str]) -> dict[str, float]:
    """{class: spread ratio} for (N, D) activations; see SPREAD_MEASURE.

    `labels` names each row's class; `known` lists the classes whose average
    within-class distance is the unit.
    """
    acts = np.asarray(acts, dtype=np.float64).reshape(len(acts), -1)
    labels_arr = np.asarray(labels)
    within: dict[str, float] = {}
    for cls in dict.fromkeys(labels):
        pts = acts[labels_arr == cls]
        if len(pts) < 2:
            raise ValueError(f"class {cls} has {len(pts)} image(s); spread needs at least 2")
        sq = (pts * pts).sum(1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * pts @ pts.T, 0.0)
        iu = np.triu_indices(len(pts), 1)
        within[cls] = float(np.sqrt(d2[iu]).mean())
    missing = [c for c in known if c not in within]
    if missing:
        raise ValueError(f"known classes {missing} have no images among the labels")
    unit = float(np.mean([within[c] for c in known]))
    # A layer that maps every known image to one point has no scale; avoid 0/0.
    unit = max(unit, 1e-12)
    return {cls: d / unit for cls, d in within.items()}


def tsne_2d(acts: np.ndarray, perplexity: float, iterations: int, seed: int
            ) -> tuple[np.ndarray, float]:
    """2-D t-SNE (init "pca", fixed seed) and the perplexity actually used.

    The perplexity is capped at (N - 1) / 3 because t-SNE needs roughly three
    neighbours per unit of perplexity.
    """
    from sklearn.manifold import TSNE

    acts = np.asarray(acts, dtype=np.float32).reshape(len(acts), -1)
    used = float(min(perplexity, max((len(acts) - 1) / 3, 1.0)))
    coords = TSNE(n_components=2, perplexity=used, init="pca", random_state=seed,
                  max_iter=iterations).fit_transform(acts)
    return coords, used


def invert(model: TransferableNet, layer: str, x: torch.Tensor, steps: int, lr: float,
           seed: int, init_std: float) -> torch.Tensor:
    """Inputs whose `layer` activations match those of `x`, optimised from noise.

    Starts from N(0, init_std^2) noise (seeded, the same for every network),
    runs `steps` Adam updates on the per-image MSE between activations, and
    keeps the input in the valid range [-1, 1]. Adam works elementwise, so each
    image's result does not depend on the others in the batch.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            target = model.activations(x, [layer])[layer].detach().clone()
        gen = torch.Generator().manual_seed(seed)
        x_hat = (torch.randn(x.shape, generator=gen) * init_std).clamp_(-1, 1)
        x_hat = x_hat.to(x.device).requires_grad_(True)
        optimizer = torch.optim.Adam([x_hat], lr=lr)
        for _ in range(steps):
            act = model.activations(x_hat, [layer])[layer]
            loss = (act - target).pow(2).flatten(1).mean(1).sum()
            # Gradient for the input only: the network's weights get no .grad.
            (x_hat.grad,) = torch.autograd.grad(loss, [x_hat])
            optimizer.step()
            with torch.no_grad():
                x_hat.clamp_(-1, 1)
        return x_hat.detach()
    finally:
        model.train(was_training)


def per_image_mse(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Mean squared difference per image; shapes may differ by flattening."""
    return (a.flatten(1) - b.flatten(1)).pow(2).mean(1).double().cpu().numpy()


class Decoder(nn.Module):
    """Centred, scaled activation -> flattened input; linear when hidden = 0."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor, out_dim: int, hidden: int):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("scale", scale)
        in_dim = mean.numel()
        self.net = (nn.Linear(in_dim, out_dim) if hidden == 0 else
                    nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim)))

    def forward(self, acts: torch.Tensor) -> torch.Tensor:
        return self.net((acts.flatten(1) - self.mean) / self.scale)


class ConvDecoder(nn.Module):
    """Centred, scaled (C, h, w) map -> (D, H, W) image, by convolutions (CONV_DECODER).

    The transposed convolutions double the map while it stays within the image, so
    an unpadded conv's map (MNIST 28 px: 12 or 4) grows to 24 or 16, and the bilinear
    resize covers the rest; a map as large as the image (the input itself) gets no
    transposed convolution. No activation after the last layer: the target is the
    normalised image.
    """

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor, in_shape: tuple[int, ...],
                 out_shape: tuple[int, ...], channels: int):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("scale", scale)
        in_ch, height, width = in_shape
        out_ch, out_h, out_w = out_shape
        self.out_size = (out_h, out_w)
        layers: list[nn.Module] = [nn.Conv2d(in_ch, channels, 3, padding=1), nn.ReLU()]
        while 2 * height <= out_h and 2 * width <= out_w:
            layers += [nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1), nn.ReLU()]
            height, width = 2 * height, 2 * width
        self.grow = nn.Sequential(*layers)
        self.out = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(channels, out_ch, 3, padding=1))

    def forward(self, acts: torch.Tensor) -> torch.Tensor:
        maps = self.grow((acts - self.mean) / self.scale)
        if tuple(maps.shape[-2:]) != self.out_size:
            maps = nn.functional.interpolate(maps, size=self.out_size, mode="bilinear",
                                             align_corners=False)
        return self.out(maps)


def decoder_kind(choice: str, acts: torch.Tensor) -> str:
    """The decoder a layer gets under `diagnostics.decoder` = `choice`: conv for an
    (N, C, h, w) map when the choice is conv, else the MLP (flat layers, and any
    activation that is not a 2-D map)."""
    return "conv" if choice == "conv" and acts.dim() == 4 else "mlp"


def train_decoder(acts: torch.Tensor, images: torch.Tensor, *, kind: str, hidden: int,
                  channels: int, epochs: int, lr: float, batch_size: int, seed: int
                  ) -> nn.Module:
    """Fit a decoder from (N, ...) activations to (N, ...) normalised images (MSE, Adam).

    kind "mlp": a `Decoder` (flattened activations to flattened images, `hidden`
    units); kind "conv": a `ConvDecoder` from (N, C, h, w) maps to (N, D, H, W)
    images (`channels` channels). Activations are centred with the training
    set's mean (per feature for the MLP, per channel for the conv decoder) and
    divided by its overall RMS, so one learning rate suits every layer.
    Initialisation and batch order come from `seed`; the global RNG is untouched.
    """
    if kind == "conv":
        if acts.dim() != 4 or images.dim() != 4:
            raise ValueError(f"a conv decoder maps (N, C, h, w) activations to (N, D, H, W) "
                             f"images; got activations {tuple(acts.shape)} and images "
                             f"{tuple(images.shape)}")
        acts, targets = acts.float(), images.float()
        mean = acts.mean((0, 2, 3), keepdim=True)
    elif kind == "mlp":
        acts = acts.flatten(1).float()
        targets = images.flatten(1).float()
        mean = acts.mean(0)
    else:
        raise ValueError(f"decoder kind {kind!r}; allowed: mlp, conv")
    # One scale per layer, not per feature: a feature that is almost constant on the
    # training images would otherwise blow up on a test image where it fires.
    scale = (acts - mean).pow(2).mean().sqrt().clamp_min(1e-6)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        decoder: nn.Module = (
            ConvDecoder(mean, scale, tuple(acts.shape[1:]), tuple(targets.shape[1:]), channels)
            if kind == "conv" else Decoder(mean, scale, targets.shape[1], hidden))
        decoder = decoder.to(acts.device)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    size = min(batch_size, len(acts))
    for _ in range(epochs):
        order = torch.randperm(len(acts), generator=gen).to(acts.device)
        for start in range(0, len(order), size):
            idx = order[start:start + size]
            loss = nn.functional.mse_loss(decoder(acts[idx]), targets[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    decoder.eval()
    return decoder


# ---------------------------------------------------------------------------
# The probes of one network
# ---------------------------------------------------------------------------

@contextmanager
def cpu_threads(count: int) -> Iterator[None]:
    """Run with at most `count` torch and OpenMP/BLAS threads (0 = unchanged)."""
    if count == 0:
        yield
        return
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        with threadpool_limits(limits=count):
            yield
    finally:
        torch.set_num_threads(before)


def _probe_images(task: TaskData, per_class: int, rng: np.random.Generator, role: str
                  ) -> tuple[np.ndarray, list[int]]:
    """`per_class` seeded test images of each class of `task`, class by class."""
    chosen, labels = [], []
    for index, cls in enumerate(task.classes):
        idx = np.flatnonzero(task.y_test == index)
        if len(idx) < per_class:
            raise ValueError(f"diagnostics.images_per_class = {per_class}, but {role} class "
                             f"{cls} has only {len(idx)} test images")
        chosen.append(np.sort(rng.choice(idx, per_class, replace=False)))
        labels += [cls] * per_class
    return task.x_test[np.concatenate(chosen)], labels


@torch.no_grad()
def _layer_acts(model: TransferableNet, x: torch.Tensor, layers: list[str],
                batch_size: int = 512) -> dict[str, torch.Tensor]:
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    for start in range(0, len(x), batch_size):
        for name, act in model.activations(x[start:start + batch_size], layers).items():
            parts[name].append(act.float())
    return {name: torch.cat(chunks) for name, chunks in parts.items()}


def _class_means(values: np.ndarray, labels: list[str]) -> dict[str, float]:
    labels_arr = np.asarray(labels)
    return {cls: float(values[labels_arr == cls].mean()) for cls in dict.fromkeys(labels)}


def _ratio(num: float, den: float) -> float:
    return num / max(den, 1e-12)


def _check_layers(model: TransferableNet, layers: list[str], name: str) -> None:
    names = list(model.layer_names)
    unknown = [layer for layer in layers if layer not in names]
    if unknown:
        raise ValueError(f"diagnostics layers {unknown} are not layers of the {name}; "
                         f"allowed: {names}")
    positions = [names.index(layer) for layer in layers]
    if not layers or positions != sorted(set(positions)):
        raise ValueError(f"diagnostics layers {layers} must be distinct layers of the {name} "
                         f"in network order {names}")


def run_diagnostics(model: TransferableNet, random_model: TransferableNet, known: TaskData,
                    unknown: TaskData, layers: list[str], cfg: DiagnosticsParams,
                    device: torch.device | str, *, seed: int, progress: bool = True) -> dict:
    """All probes for `layers` of `model` (trained on `known`'s classes); JSON-able.

    `random_model` is a randomly initialised network of the same shape, the
    baseline of the gradient inversion. Probe images are `cfg.images_per_class`
    test images per class of both tasks, drawn with `seed` (which also seeds the
    inversion noise, the decoders and t-SNE); decoders train on `known`'s
    training images. Class keys are the original dataset labels as strings.
    The models are used in eval mode and left in the mode they came in.
    """
    device = torch.device(device)
    _check_layers(model, layers, "trained model")
    _check_layers(random_model, layers, "random model")
    overlap = set(known.classes) & set(unknown.classes)
    if overlap:
        raise ValueError(f"known and unknown classes overlap: {sorted(overlap)}")
    if known.image_shape != unknown.image_shape:
        raise ValueError(f"known images are {known.image_shape}, unknown {unknown.image_shape}")
    k = cfg.images_per_class
    k_inv = cfg.inversion_images_per_class or k
    if k_inv > k:
        raise ValueError(f"diagnostics.inversion_images_per_class = {k_inv} exceeds "
                         f"images_per_class = {k}; allowed: 0 (all) to {k}")

    known_cls = [str(c) for c in known.classes]
    unknown_cls = [str(c) for c in unknown.classes]
    rng = np.random.default_rng(seed)
    k_img, k_lab = _probe_images(known, k, rng, "known")
    u_img, u_lab = _probe_images(unknown, k, rng, "unknown")
    labels = [str(c) for c in k_lab + u_lab]
    x = torch.cat([to_tensor(k_img, known.pixel_max, device, known.mean, known.std),
                   to_tensor(u_img, unknown.pixel_max, device, unknown.mean, unknown.std)])
    # Images are grouped by class, k each: the inversion takes the first k_inv of each.
    inv_idx = [c * k + j for c in range(len(labels) // k) for j in range(k_inv)]
    x_inv, inv_labels = x[inv_idx], [labels[i] for i in inv_idx]
    train = known.subsampled(cfg.decoder_train_per_class, seed)
    x_train = to_tensor(train.x_train, train.pixel_max, device, train.mean, train.std)

    models = {"trained": model.to(device), "random": random_model.to(device)}
    modes = {name: m.training for name, m in models.items()}
    for m in models.values():
        m.eval()
    results: dict = {
        "measures": {"spread": SPREAD_MEASURE, "inversion": INVERSION_MEASURE,
                     "decoder": decoder_measure(cfg.decoder),
                     "decoder_gap": DECODER_GAP_MEASURE},
        "config": {**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)},
                   "seed": seed},
        "layers": list(layers),
        "layer_positions": {layer: model.layer_names.index(layer) + 1 for layer in layers},
        "known_classes": known_cls,
        "unknown_classes": unknown_cls,
        "images_per_class": k,
        "inversion_images_per_class": k_inv,
        "decoder_train_images": len(train.y_train),
        "spread": {}, "inversion": {"trained": {}, "random": {}}, "decoder": {},
        "decoder_train_mse": {}, "tsne": {"labels": labels, "perplexity": None, "coords": {}},
        "summary": {},
    }
    bar = progress_bar(total=4 * len(layers) + 1, desc="diagnostics", unit="probe",
                       leave=False, disable=not progress)

    def decode(train_in: torch.Tensor, test_in: torch.Tensor, key: str, kind: str) -> None:
        decoder = train_decoder(train_in, x_train, kind=kind, hidden=cfg.decoder_hidden,
                                channels=cfg.decoder_channels, epochs=cfg.decoder_epochs,
                                lr=cfg.decoder_lr, batch_size=cfg.decoder_batch_size, seed=seed)
        with torch.no_grad():
            results["decoder"][key] = _class_means(per_image_mse(decoder(test_in), x), labels)
            results["decoder_train_mse"][key] = float(
                per_image_mse(decoder(train_in), x_train).mean())
        results["decoder_kinds"][key] = kind
        bar.update(1)

    try:
        with cpu_threads(cfg.cpu_threads if device.type == "cpu" else 0):
            acts = _layer_acts(model, x, layers)
            train_acts = _layer_acts(model, x_train, layers)
            # Each layer's gap is taken against the input decoded by the same kind of
            # decoder: "input" by the chosen kind (an image is always a map), and, when
            # conv leaves some flat layers to the MLP, "input_mlp" for those.
            kinds = {layer: decoder_kind(cfg.decoder, acts[layer]) for layer in layers}
            results["decoder_kinds"] = {}
            results["decoder_baseline"] = {
                layer: "input" if kinds[layer] == cfg.decoder else "input_mlp"
                for layer in layers}
            decode(x_train, x, "input", cfg.decoder)
            if "input_mlp" in results["decoder_baseline"].values():
                bar.total += 1
                decode(x_train, x, "input_mlp", "mlp")
            for layer in layers:
                a = acts[layer].cpu().numpy()
                results["spread"][layer] = spread_ratios(a, labels, known_cls)
                coords, used = tsne_2d(a, cfg.tsne_perplexity, cfg.tsne_iterations, seed)
                results["tsne"]["coords"][layer] = coords.astype(float).tolist()
                results["tsne"]["perplexity"] = used
                bar.update(1)
                for name, m in models.items():
                    x_hat = invert(m, layer, x_inv, cfg.inversion_steps, cfg.inversion_lr,
                                   seed, cfg.inversion_init_std)
                    results["inversion"][name][layer] = _class_means(
                        per_image_mse(x_hat, x_inv), inv_labels)
                    bar.update(1)
                decode(train_acts[layer], acts[layer], layer, kinds[layer])
                results["summary"][layer] = _layer_summary(results, layer)
    finally:
        bar.close()
        for name, m in models.items():
            m.train(modes[name])
    return results


def _layer_summary(results: dict, layer: str) -> dict:
    known, unknown = results["known_classes"], results["unknown_classes"]
    dec, inv = results["decoder"][layer], results["inversion"]["trained"][layer]
    dec_input = results["decoder"][results["decoder_baseline"][layer]]
    inv_random = results["inversion"]["random"][layer]
    spread = results["spread"][layer]
    every = known + unknown
    gap = class_mean(dec, unknown) - class_mean(dec, known)
    input_gap = class_mean(dec_input, unknown) - class_mean(dec_input, known)
    return {
        "decoder_known": class_mean(dec, known),
        "decoder_unknown": class_mean(dec, unknown),
        "decoder_ratio": _ratio(class_mean(dec, unknown), class_mean(dec, known)),
        "decoder_gap": gap - input_gap,
        "spread_unknown": class_mean(spread, unknown),
        "spread_max_unknown": max(spread[c] for c in unknown),
        "inversion_known": class_mean(inv, known),
        "inversion_unknown": class_mean(inv, unknown),
        "inversion_ratio": _ratio(class_mean(inv, unknown), class_mean(inv, known)),
        "inversion_trained_over_random": _ratio(class_mean(inv, every),
                                                class_mean(inv_random, every)),
    }


# ---------------------------------------------------------------------------
# The pipeline's diagnostics stage
# ---------------------------------------------------------------------------

def _probe_task(task: TaskData, crop: int) -> TaskData:
    """What the network sees: centre crops (data.crop), one class per image (a multi-label
    image counts as its first label)."""
    from transferlab.data.prepared import center_cropped

    task = center_cropped(task, crop)
    x_train, x_test = task.x_train, task.x_test
    y_train, y_test = task.y_train, task.y_test
    if task.multilabel:
        y_train, y_test = (y_train > 0).argmax(1), (y_test > 0).argmax(1)
    return TaskData(list(task.classes), x_train, y_train.astype(np.int64), x_test,
                    y_test.astype(np.int64), task.pixel_max, task.mean, task.std,
                    class_names=task.class_names)


def diagnose(params: Params, *, prepared: Path, model_path: Path, out: Path,
             progress: bool = True) -> dict:
    """Probe model A with its own classes (known) and the target's (unknown)."""
    from transferlab.io import write_json_atomic
    from transferlab.timing import compute
    from transferlab.training.loop import pick_device
    from transferlab.training.variant import load_model, new_model

    known = _probe_task(TaskData.load(Path(prepared) / "source.npz"), params.data.crop)
    unknown = _probe_task(TaskData.load(Path(prepared) / "target.npz"), params.data.crop)
    if set(known.classes) & set(unknown.classes):  # two datasets: indices overlap, names tell
        known.classes = [f"source:{n}" for n in known.class_names or known.classes]
        unknown.classes = [f"target:{n}" for n in unknown.class_names or unknown.classes]
    device = pick_device()
    model = load_model(model_path, params, known.image_shape, known.num_classes, device)
    # The inversion's baseline: same shape, random weights, a seed of its own.
    random_model = new_model(params, known, params.seed + 7919, device)
    # The layers the heads see (by default all); a torchvision source's nodes are not
    # layers of model A, so then every layer of A is probed.
    names = list(params.layer_names)
    layers = names if params.features.source_model != "A" else sorted(params.features.layers,
                                                                 key=names.index)
    with compute():
        results = run_diagnostics(model, random_model, known, unknown, layers,
                                  params.diagnostics, device, seed=params.seed,
                                  progress=progress)
    write_json_atomic(out, results)
    print("diagnostics: " + ", ".join(
        f"{layer} decoder gap {s['decoder_gap']:.3g} spread {s['spread_unknown']:.3g}"
        for layer, s in results["summary"].items()))
    return results
