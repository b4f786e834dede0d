"""ITS / TS / GCNet-framework / complete: losses, gradients, the stop-gradient to the teacher."""

import pytest
import torch

from conftest import tiny_config
from iteacnet.config import replace
from iteacnet.data.batching import collate
from iteacnet.data.loading import load_corpus
from iteacnet.masking import sample_mask
from iteacnet.training.engine import model_input, prepare
from iteacnet.training.frameworks import (
    FRAMEWORKS,
    build_method,
    framework_defaults,
    incomplete_rows,
)


def _batch_and_method(framework: str, rate: float = 0.5):
    cfg = tiny_config()
    cfg = replace(cfg, **{"model.framework": framework, **{f"model.{k}": v for k, v in framework_defaults(framework).items()}})
    cfg = replace(cfg, **{"model.ecce.max_span": 3})  # keeps ECCE's bias b from being a softmax no-op
    data = prepare(load_corpus(cfg.data), cfg)
    torch.manual_seed(0)
    method = build_method(data.spec, cfg.model)
    batch = collate(data.corpus, list(data.split.train)[:4])
    g = torch.Generator().manual_seed(0)
    mask = sample_mask(batch.valid, batch.available.shape[-1], rate, g, batch.available)
    return method, batch, model_input(batch, batch.available), model_input(batch, mask)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_every_parameter_gets_a_gradient(framework):
    method, batch, full, masked = _batch_and_method(framework)
    out = method.training_loss(full, masked, batch.labels)
    out.total.backward()
    assert torch.isfinite(out.total)
    missing = [n for n, p in method.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    assert any(float(p.grad.abs().sum()) > 0 for n, p in method.named_parameters() if "router" in n) or framework in ("gcnet", "complete")


def test_reconstruction_loss_matches_hand_computation():
    """L_rec = Σ λ_k MSE over utterances missing a modality, k = 1 next to the classifier."""
    method, batch, full, masked = _batch_and_method("its")
    method.eval()
    rows = incomplete_rows(full, masked)
    assert rows.any() and not rows.all()
    out = method.training_loss(full, masked, batch.labels)
    h_t, h_s = method.teacher(full).hiddens, method.student(masked).hiddens
    assert len(h_t) == 3 and len(h_s) == 4
    expected = sum(w * ((h_s[-k][rows] - h_t[-k][rows]) ** 2).mean() for k, w in zip((1, 2, 3), (1.0, 0.5, 0.25)))
    assert out.parts["rec"] == pytest.approx(float(expected.detach()), rel=1e-5)


def test_framework_loss_gives_teacher_only_its_own_emotion_gradient():
    """The reconstruction loss sends no gradient to the teacher: the gradient of the whole ITS
    loss on the teacher equals that of L_emo(teacher) alone."""
    method, batch, full, masked = _batch_and_method("its")
    method.eval()  # no dropout, so two passes are identical
    method.training_loss(full, masked, batch.labels).total.backward()
    g_total = [p.grad.clone() for p in method.teacher.parameters()]
    method.zero_grad()
    from iteacnet.models.base import emotion_loss

    emotion_loss(method.teacher(full).logits, batch.labels, full.valid, method.spec).backward()
    for a, p in zip(g_total, method.teacher.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-5, atol=1e-7)


def test_no_reconstruction_loss_without_missing_modalities():
    method, batch, full, masked = _batch_and_method("its", rate=0.0)
    out = method.training_loss(full, masked, batch.labels)
    assert out.parts["rec"] == 0.0


def test_ts_is_its_with_capacities_swapped():
    assert framework_defaults("its")["student_kind"] == "NAS" and framework_defaults("ts")["teacher_kind"] == "NAS"
    with pytest.raises(ValueError, match="unknown framework"):
        framework_defaults("nope")
