"""Loading models/*.pt: a damaged file gives an error that names it."""

from __future__ import annotations

import re

import pytest
import torch

from transferlab.training.variant import load_model, new_model, save_model


def _load(path, params, task):
    return load_model(path, params, task.image_shape, task.num_classes, torch.device("cpu"))


def test_a_damaged_model_file_names_itself(tmp_path, tiny_params, digits_tasks):
    source = digits_tasks[0]
    path = tmp_path / "A.pt"
    model = new_model(tiny_params, source, 0, torch.device("cpu"))
    save_model(model, path, {"classes": source.classes})
    loaded = _load(path, tiny_params, source)
    first = next(iter(model.state_dict()))
    assert torch.equal(loaded.state_dict()[first], model.state_dict()[first])
    data = path.read_bytes()
    where = re.escape(str(path))
    for broken in (data[:1000], b"not a model at all", b"junk", b"",
                   b"\x80\x02}q\x00."):  # a pickle, not a torch file
        path.write_bytes(broken)
        with pytest.raises(ValueError, match=f"{where}: cannot load the model .*pretrain"):
            _load(path, tiny_params, source)
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match=f"{where} holds no model state_dict"):
        _load(path, tiny_params, source)
