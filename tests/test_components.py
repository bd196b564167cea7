"""The component tables: every configurable name has its entry, and each entry's parts agree."""

import typing

import pytest
import torch

from backprop_cli.core import components
from backprop_cli.core.build import make_loss, make_optimizer, make_scheduler
from backprop_cli.config import ACTIVATION_NAMES, LOSS_NAMES, OPTIMIZER_NAMES, SCHEDULER_NAMES
from backprop_cli.config import components as components_schema
from backprop_cli.config.load import parse_optimizer, validate

BASE = {"model": {"input_size": 3, "hidden_size": 4, "output_size": 2},
        "data": {"kind": "synthetic", "samples": 8, "batch_size": 4}}


def spec_of(section, name):
    base = {**BASE, "data": {**BASE["data"], "targets": "classes"}} if section == "loss" and components_schema.is_classification(name) else BASE
    cfg = validate({**base, section: {"name": name}} if section != "activation"
                   else {**base, "model": {**base["model"], "activation": name}})
    return cfg.model.activation if section == "activation" else getattr(cfg, section)


def test_the_name_tuples_are_derived_from_the_schema_unions():
    for names, union in ((ACTIVATION_NAMES, components_schema.ActivationSpec), (LOSS_NAMES, components_schema.LossSpec),
                         (OPTIMIZER_NAMES, components_schema.OptimizerSpec), (SCHEDULER_NAMES, components_schema.SchedulerSpec)):
        members = typing.get_args(typing.get_args(union)[0])
        assert names == tuple(typing.get_args(m.model_fields["name"].annotation)[0] for m in members)


def test_every_configurable_name_is_in_every_table():
    assert set(components.ACTIVATIONS) == set(ACTIVATION_NAMES)
    assert set(components.LOSSES) == set(LOSS_NAMES)
    assert set(components.OPTIMIZERS) == set(OPTIMIZER_NAMES)
    assert set(components.SCHEDULERS) == set(SCHEDULER_NAMES)
    for entry in list(components.ACTIVATIONS.values()) + list(components.LOSSES.values()):
        assert entry.label and callable(entry.module)
    for entry in components.ACTIVATIONS.values():
        assert callable(entry.forward) and callable(entry.derivative) and entry.gain
    for entry in components.LOSSES.values():
        assert callable(entry.gradient)
    assert set(components_schema.TASKS) == set(LOSS_NAMES)


def test_one_task_per_loss_from_one_table():
    """The one answer to "is this classification?": cross_entropy takes class labels, bce_with_logits 0/1
    targets, every other loss real values."""
    assert {n: components_schema.task_of(n) for n in LOSS_NAMES} == {
        "mse": "regression", "l1": "regression", "huber": "regression", "smooth_l1": "regression",
        "cross_entropy": "classes", "bce_with_logits": "binary"}
    assert [n for n in LOSS_NAMES if components_schema.is_classification(n)] == ["cross_entropy", "bce_with_logits"]
    assert components_schema.task_of(spec_of("loss", "cross_entropy")) == "classes"


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_each_activation_forward_and_derivative_match_its_torch_module(name):
    spec = spec_of("activation", name)
    entry = components.ACTIVATIONS[name]
    z = torch.linspace(-3, 3, 41, dtype=torch.float64).requires_grad_()
    a = entry.module(spec)(z)
    assert type(entry.module(spec)).__name__ == entry.label
    opts = spec.model_dump()
    assert torch.allclose(entry.forward(z.detach(), opts), a.detach(), atol=1e-12)
    (grad,) = torch.autograd.grad(a.sum(), z)
    assert torch.allclose(entry.derivative(z.detach(), a.detach(), opts), grad, atol=1e-10)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_each_loss_gradient_matches_its_torch_module(name):
    spec = spec_of("loss", name)
    entry = components.LOSSES[name]
    g = torch.Generator().manual_seed(1)
    y_hat = torch.randn(5, 3, generator=g, dtype=torch.float64).requires_grad_()
    y = (torch.randint(0, 3, (5,), generator=g) if name == "cross_entropy"
         else torch.rand(5, 3, generator=g, dtype=torch.float64))
    loss = make_loss(spec)(y_hat, y)
    assert type(make_loss(spec)).__name__ == entry.label
    (grad,) = torch.autograd.grad(loss, y_hat)
    assert torch.allclose(entry.gradient(y_hat.detach(), y, spec), grad, atol=1e-12)


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_each_optimizer_builds_its_torch_class(name):
    opt = make_optimizer(parse_optimizer(name), [torch.zeros(2, requires_grad=True)])
    assert type(opt) is components.OPTIMIZERS[name]


@pytest.mark.parametrize("name,extra", [("none", {}), ("step", {"step_size": 2}), ("cosine", {}),
                                        ("warmup_cosine", {"warmup_steps": 2})])
def test_each_schedule_builds(name, extra):
    cfg = validate({**BASE, "scheduler": {"name": name, **extra}})
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = make_scheduler(cfg.scheduler, opt, 10)
    assert (sched is None) == (name == "none")
