"""Our VGG-16 and ResNet-50 with converted torchvision weights give
torchvision's logits, on the GPU, in fp32 with TF32 off.

Needs torchvision (present on the GPU machine, not on the CPU one). The
torchvision models keep their random initialisation (``weights=None``: no
download); biases and batch-norm statistics, which that initialisation sets
to constants, are randomised so that every converted value matters.

Run: ``python -m pytest -s tests/test_models_gpu.py`` (``-s`` shows the
measured errors).
"""

import pytest
import torch

torchvision = pytest.importorskip("torchvision")

from lasagne.layers import get_output  # noqa: E402
from lasagne.models import (build_vgg16, build_resnet50, vgg16_from_torchvision,  # noqa: E402
                            resnet50_from_torchvision, torchvision_vgg16_mapping,
                            torchvision_resnet50_mapping)

RTOL = 1e-4


@pytest.fixture
def fp32_without_tf32():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def rel_err(a, b):
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).abs().max() / b.abs().max()).item()


def randomize(model, seed):
    """Random biases and batch-norm affine parameters and statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(0.5 + torch.rand(c, generator=gen))
                module.bias.copy_(0.1 * torch.randn(c, generator=gen))
                module.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                module.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=gen))
            elif getattr(module, "bias", None) is not None:
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
    return model


def run_ours(net, output, x, how):
    """Our network on CUDA, moved by ``Network.to`` or built on CUDA."""
    if how == "network":
        from lasagne.network import Network
        model = Network(net[output]).to("cuda").eval()
        with torch.no_grad():
            return model(x)
    return get_output(net[output], x, deterministic=True)


def build_on(how, builder, **kwargs):
    if how == "network":
        return builder(**kwargs)
    with torch.device("cuda"):
        return builder(**kwargs)


def test_mappings_cover_torchvision_state_dicts():
    vgg = torchvision.models.vgg16(weights=None).state_dict()
    resnet = torchvision.models.resnet50(weights=None).state_dict()
    assert set(k for k, _, _ in torchvision_vgg16_mapping()) == set(vgg)
    assert set(k for k, _, _ in torchvision_resnet50_mapping()) == set(resnet)
    assert len(resnet) == 320
    assert sum(p.numel() for p in torchvision.models.vgg16(weights=None).parameters()) == \
        138357544


@pytest.mark.gpu
@pytest.mark.parametrize("how", ["network", "default_device"])
def test_vgg16_matches_torchvision(fp32_without_tf32, how):
    torch.manual_seed(0)
    tv = randomize(torchvision.models.vgg16(weights=None), 1).eval()
    net = build_on(how, build_vgg16)
    vgg16_from_torchvision(tv.state_dict(), net)
    tv = tv.cuda()
    x = torch.randn(4, 3, 224, 224, device="cuda")
    with torch.no_grad():
        ref = tv(x)
    logits = run_ours(net, "fc8", x, how)
    err = rel_err(logits, ref)
    print("\nVGG-16 ({}): max|ours - torchvision| / max|torchvision| = {:.2e}".format(how, err))
    assert err < RTOL
    prob = run_ours(net, "prob", x, how)
    assert rel_err(prob, torch.softmax(ref, 1)) < RTOL


@pytest.mark.gpu
@pytest.mark.parametrize("how", ["network", "default_device"])
def test_resnet50_matches_torchvision(fp32_without_tf32, how):
    torch.manual_seed(0)
    tv = randomize(torchvision.models.resnet50(weights=None), 2).eval()
    net = build_on(how, build_resnet50, variant="v1.5")
    resnet50_from_torchvision(tv.state_dict(), net)
    tv = tv.cuda()
    x = torch.randn(4, 3, 224, 224, device="cuda")
    with torch.no_grad():
        ref = tv(x)
    logits = run_ours(net, "fc1000", x, how)
    err = rel_err(logits, ref)
    print("\nResNet-50 v1.5 ({}): max|ours - torchvision| / max|torchvision| = {:.2e}".format(
        how, err))
    assert err < RTOL
    # another input size: torchvision's adaptive pool and our global pool
    x = torch.randn(2, 3, 160, 192, device="cuda")
    with torch.no_grad():
        ref = tv(x)
    assert rel_err(run_ours(net, "fc1000", x, how), ref) < RTOL
