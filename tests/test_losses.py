import math

import pytest
import torch
from torch import nn

from transferlab.models import build_model
from transferlab.models.base import TransferableNet
from transferlab.training.augment import center_crop, random_crop_flip
from transferlab.training.losses import BinaryAux, Objective


def ce_by_hand(logits, y):
    """Mean of -log softmax(logits)[y], with python floats."""
    total = 0.0
    for row, label in zip(logits.tolist(), y.tolist(), strict=True):
        top = max(row)
        log_norm = top + math.log(sum(math.exp(v - top) for v in row))
        total += log_norm - row[label]
    return total / len(y)


def feedback(iterations, classes=4):
    torch.manual_seed(0)
    return build_model("feedback", (3, 32, 32), classes, iterations=iterations, width=2,
                       hidden=8).eval()


BATCH = torch.linspace(-1, 1, 6 * 3 * 32 * 32).reshape(6, 3, 32, 32).sin()
LABELS = torch.tensor([0, 1, 2, 3, 1, 0])


def test_single_label_objective_is_cross_entropy():
    model = build_model("convnet", (3, 32, 32), 4, width=4, hidden=8).eval()
    loss, logits = Objective()(model, BATCH, LABELS)
    torch.testing.assert_close(logits, model(BATCH))
    assert loss.item() == pytest.approx(ce_by_hand(logits, LABELS), rel=1e-5)


def test_feedback_loss_is_the_discounted_sum_over_iterations_from_one():
    model = feedback(iterations=3)
    loss, logits = Objective(gamma=1.2)(model, BATCH, LABELS)
    with torch.no_grad():
        outs = model.outputs(BATCH)
    assert len(outs) == 3
    # Spero, eq. 7: L = sum_i gamma^i L_i with iterations numbered 1..n.
    by_hand = (1.2 * ce_by_hand(outs[0], LABELS) + 1.44 * ce_by_hand(outs[1], LABELS)
               + 1.728 * ce_by_hand(outs[2], LABELS))
    assert loss.item() == pytest.approx(by_hand, rel=1e-5)
    torch.testing.assert_close(logits, outs[2])
    # The iterations really differ, so the weights matter.
    assert abs(ce_by_hand(outs[0], LABELS) - ce_by_hand(outs[2], LABELS)) > 1e-4


def test_one_iteration_gives_the_plain_loss():
    model = feedback(iterations=1)
    loss, logits = Objective(gamma=1.2)(model, BATCH, LABELS)
    assert loss.item() == pytest.approx(ce_by_hand(logits, LABELS), rel=1e-5)


def test_binary_heads_split_the_classes_in_seeded_halves():
    aux = BinaryAux(num_classes=7, num_heads=3, embed_dim=5, weight=0.4, seed=11)
    assert aux.codes.shape == (3, 7)
    assert (aux.codes == 0).sum(1).tolist() == [3, 3, 3]
    assert torch.equal(aux.codes, BinaryAux(7, 3, 5, 0.4, seed=11).codes)
    others = [BinaryAux(7, 3, 5, 0.4, seed=s).codes for s in range(5)]
    assert any(not torch.equal(aux.codes, c) for c in others)
    assert len({tuple(row) for row in aux.codes.tolist()}) > 1  # heads split differently


@pytest.mark.parametrize("heads", [1, 3])
def test_binary_aux_loss_follows_the_formula(heads):
    model = build_model("convnet", (3, 32, 32), 4, width=4, hidden=8).eval()
    aux = BinaryAux(num_classes=4, num_heads=heads, embed_dim=model.embed_dim, weight=0.4,
                    seed=3)
    objective = Objective(binary_aux=aux)
    loss, logits = objective(model, BATCH, LABELS)
    with torch.no_grad():
        emb = model.embed(BATCH)
        binary = [ce_by_hand(aux.heads[h](emb), aux.codes[h][LABELS]) for h in range(heads)]
    # (1 - B) CE(y) + B * mean over heads of CE(y_b).
    expected = 0.6 * ce_by_hand(logits, LABELS) + 0.4 * sum(binary) / heads
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # The aux heads belong to the objective, never to the model.
    assert {id(p) for p in objective.parameters()} == {id(p) for p in aux.heads.parameters()}
    assert not any(k.startswith("binary") for k in model.state_dict())


def test_binary_aux_on_the_feedback_net_uses_the_last_iteration():
    model = feedback(iterations=2)
    aux = BinaryAux(4, 1, model.embed_dim, 0.4, seed=0)
    loss, _ = Objective(gamma=1.2, binary_aux=aux)(model, BATCH, LABELS)
    with torch.no_grad():
        outs = model.outputs(BATCH)
        emb = model.iteration_embeddings(BATCH)[-1]
    task = 1.2 * ce_by_hand(outs[0], LABELS) + 1.44 * ce_by_hand(outs[1], LABELS)
    binary = ce_by_hand(aux.heads[0](emb), aux.codes[0][LABELS])
    assert loss.item() == pytest.approx(0.6 * task + 0.4 * binary, rel=1e-5)


def identity_model(labels):
    """A model whose logits are its input, to feed fixed logits to the objective."""
    return TransferableNet([("flat", nn.Flatten())], labels, head=nn.Identity())


def test_multilabel_bce_skips_ignored_labels():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-0.5, 3.0, -2.0]])
    y = torch.tensor([[1, 0, 1], [0, 0, 1]], dtype=torch.uint8)
    ignore = torch.tensor([[False, True, False], [False, False, True]])
    loss, out = Objective(multilabel=True)(identity_model(3), logits, y, ignore)

    def bce(z, t):
        p = 1 / (1 + math.exp(-z))
        return -(t * math.log(p) + (1 - t) * math.log(1 - p))

    kept = [(0, 0), (0, 2), (1, 0), (1, 1)]
    expected = sum(bce(logits[i, j].item(), y[i, j].item()) for i, j in kept) / len(kept)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(out, logits)
    all_ignored = torch.ones_like(ignore)
    assert Objective(multilabel=True)(identity_model(3), logits, y, all_ignored)[0].item() == 0
    unmasked = Objective(multilabel=True)(identity_model(3), logits, y)[0].item()
    assert unmasked == pytest.approx(
        sum(bce(logits[i, j].item(), y[i, j].item()) for i in range(2) for j in range(3)) / 6,
        rel=1e-6)


def test_objective_refuses_mismatched_options():
    with pytest.raises(ValueError, match="multi-label"):
        Objective(multilabel=True, binary_aux=BinaryAux(4, 1, 3, 0.4, 0))
    with pytest.raises(ValueError, match="ignore mask"):
        Objective()(identity_model(3), torch.zeros(2, 3), torch.tensor([0, 1]),
                    torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="weight = 1.5"):
        BinaryAux(4, 1, 3, 1.5, 0)


# Augmentation: crops and mirrors of the training batch.

def distinct_images(n=32, c=2, size=10):
    return torch.arange(n * c * size * size, dtype=torch.float32).reshape(n, c, size, size)


def find_window(image, crop):
    """(top, left, mirrored) of the window of `image` equal to `crop`, or None."""
    size = crop.shape[-1]
    for top in range(image.shape[1] - size + 1):
        for left in range(image.shape[2] - size + 1):
            window = image[:, top:top + size, left:left + size]
            if torch.equal(window, crop):
                return top, left, False
            if torch.equal(window.flip(-1), crop):
                return top, left, True
    return None


def test_random_crop_flip_takes_windows_of_each_source_image():
    x = distinct_images()
    out = random_crop_flip(x, 7, torch.Generator().manual_seed(0))
    assert out.shape == (32, 2, 7, 7) and out.dtype == x.dtype
    found = [find_window(x[i], out[i]) for i in range(len(x))]
    assert all(f is not None for f in found)
    assert {f[2] for f in found} == {False, True}  # both mirrored and plain crops occur
    assert len({f[:2] for f in found}) > 4  # and several offsets
    again = random_crop_flip(x, 7, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert not torch.equal(out, random_crop_flip(x, 7, torch.Generator().manual_seed(1)))


def test_random_crop_of_the_padded_image():
    x = distinct_images(n=8, size=6) + 1  # no zero pixels in the source
    out = random_crop_flip(x, 6, torch.Generator().manual_seed(2), pad=2)
    padded = nn.functional.pad(x, (2, 2, 2, 2))
    assert all(find_window(padded[i], out[i]) is not None for i in range(8))
    assert (out == 0).any()  # some crop reaches into the padding


def test_center_crop_57_of_64():
    x = distinct_images(n=2, size=64)
    out = center_crop(x, 57)
    assert out.shape == (2, 2, 57, 57)
    assert torch.equal(out, x[:, :, 3:60, 3:60])
    with pytest.raises(ValueError, match="crop size 65"):
        center_crop(x, 65)


def test_padding_is_black_in_the_normalised_batches():
    """Training batches are normalised before they are padded and cropped: the padding
    is a black pixel's normalised value (-mean / std per channel), as torchvision's
    RandomCrop(padding=4) before Normalize gives, not the mean colour (0)."""
    import numpy as np

    from transferlab.config.params import parse_params
    from transferlab.data.prepared import TaskData
    from transferlab.training.augment import pad_images
    from transferlab.training.loop import to_tensor
    from transferlab.training.variant import black, train_transform

    from .conftest import TINY, complete

    images = np.full((4, 3, 6, 6), 200, np.uint8)
    task = TaskData([0, 1], images, np.array([0, 1, 0, 1]), images, np.array([0, 1, 0, 1]),
                    255, mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.1))
    zero = to_tensor(np.zeros((1, 3, 1, 1), np.uint8), 255, torch.device("cpu"),
                     task.mean, task.std)
    assert torch.allclose(torch.tensor(black(task)), zero.flatten())
    x = to_tensor(images, 255, torch.device("cpu"), task.mean, task.std)
    padded = pad_images(x, 2, black(task))
    assert padded.shape == (4, 3, 10, 10)
    assert torch.equal(padded[:, :, 2:8, 2:8], x)
    assert torch.allclose(padded[:, :, 0, 0], zero.flatten().expand(4, 3))
    params = parse_params(complete({**TINY, "data": {"crop": 6, "pad": 2}}))
    out = train_transform(params, task)(x, torch.Generator().manual_seed(0))
    # every pixel is the image's or black; some crop reaches into the padding
    is_image = torch.isclose(out, x[:1, :, :1, :1].expand_as(out))
    is_black = torch.isclose(out, zero.expand_as(out))
    assert (is_image | is_black).all() and is_black.any()
    # the half normalisation's black is -1, a single value (F.pad's fast path)
    half = TaskData([0], images, np.zeros(4), images, np.zeros(4), 255)
    assert black(half) == (-1.0,)
    assert torch.equal(pad_images(x, 1, (-1.0,))[:, :, 0, 0], torch.full((4, 3), -1.0))
