"""Discrete-latent autoencoders (Figures 4 and 5): presets, bits accounting, metrics, data errors,
bridge semantics, annealing (against the reference's recursions), the posterior probe, and that a
short run of every model learns something."""
import json
import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import dab.suite.families.autoencoding as ae
from dab.bridge import pop_dab_loss
from dab.errors import ConfigError
from dab.suite.experiment import run_experiment
from dab.suite.families import parse
from dab.suite.image_data import ImageSplit, image_shape
from dab.suite.image_metrics import linear_probe_accuracy, ms_ssim_upsampled
from dab.suite.models.latents import (LATENTS, RelaxedLatent, anneal_temperature, cosine_epochs_for_steps,
                                make_bridged_latent)

from conftest import REPO, compose_config, presets_for_task, small_overrides

AE_PRESETS = presets_for_task("autoencode")


def prototype_images(n: int, shape, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [n, *shape] images: one of 10 fixed near-binary blob patterns per class plus a little
    noise (near-binary, so the Bernoulli NLL rewards learning the class shapes); labels [n]."""
    gen = torch.Generator().manual_seed(seed)
    c, h, w = shape
    blobs = torch.nn.functional.interpolate(torch.rand(10, c, 4, 4, generator=torch.Generator().manual_seed(99)),
                                            size=(h, w), mode="bilinear", align_corners=False)
    protos = 0.05 + 0.9 * (blobs > 0.5).float()
    labels = torch.randint(0, 10, (n,), generator=gen)
    x = (protos[labels] + 0.05 * torch.randn(n, c, h, w, generator=gen)).clamp(0, 1)
    return (x * 255).round().to(torch.uint8), labels


@pytest.fixture
def synthetic_data(monkeypatch):
    """Every image data set (fmnist, cifar10, imagenet) served from class prototypes of its shape."""

    def split(name, root, train, device, download=True):
        images, labels = prototype_images(512 if train else 128, image_shape(name), seed=int(train))
        return ImageSplit(images.to(device), labels.to(device))

    def loader(path, size, batch_size, train, workers=8):
        images, labels = prototype_images(96 if train else 64, (3, size, size), seed=int(train))
        return DataLoader(TensorDataset(images.float() / 255, labels), batch_size=batch_size, shuffle=train,
                          drop_last=train)

    monkeypatch.setattr(ae, "load_image_split", split)
    monkeypatch.setattr(ae, "imagenet_loader", loader)


IMAGENET_SMALL = ["dataset.workers=0", "dataset.image_size=32"]  # imagenet at 32x32 so ResNet18 stays quick


def ae_overrides(tmp_path, steps: int = 3, preset: str = "vae_fmnist") -> list[str]:
    """Tiny autoencoders on the CPU (``preset`` picks the data set's own settings)."""
    return [*small_overrides(tmp_path / "runs", steps=steps), "model.hidden=32", "dataset.test_size=16",
            "dataset.probe_size=64", *(IMAGENET_SMALL if preset == "vae_imagenet" else [])]


def test_presets_exist_per_figure():
    assert set(AE_PRESETS) == {"vae_fmnist", "vae_cifar10", "vae_imagenet"}


@pytest.mark.parametrize("latent", LATENTS.names())
def test_every_latent_variant_trains_and_reports_its_metrics(latent, tmp_path, synthetic_data):
    cfg = compose_config(["+experiment=vae_fmnist", f"latent={latent}", *ae_overrides(tmp_path, steps=2)])
    m = run_experiment(cfg, tmp_path / "run")
    assert m["train/steps"] == (0 if latent == "threshold" else 2)  # threshold has nothing to train
    assert m["train/trainable"] == (latent != "threshold")  # so a campaign counts it done at any budget
    assert ("test/kl" in m) == (latent in ("bernoulli", "discrete"))
    assert ("train/tau_final" in m) == (latent in ("bernoulli", "discrete"))
    assert ("test/linear_acc_posterior" in m) == (latent in ("bernoulli", "discrete", "bridged_bernoulli",
                                                            "bridged_categorical"))
    assert ("test/threshold_tau" in m) == (latent == "threshold")
    assert m["test/recon_loss"] > 0 and m["test/bits"] <= 0.1 * 784 + 1e-9
    assert (tmp_path / "run" / "checkpoint.pt").is_file()  # parameter-free threshold included


def test_a_parameter_free_run_resumes_from_its_checkpoint(tmp_path, synthetic_data):
    cfg = compose_config(["+experiment=vae_fmnist", "latent=threshold", *ae_overrides(tmp_path)])
    first = run_experiment(cfg, tmp_path / "a")
    again = compose_config(["+experiment=vae_fmnist", "latent=threshold", *ae_overrides(tmp_path),
                            f"trainer.resume_from={tmp_path / 'a'}"])
    second = run_experiment(again, tmp_path / "b")
    assert second["resumed_from"] and second["train/steps"] == 0
    assert second["test/ms_ssim"] == first["test/ms_ssim"]


def test_ms_ssim_wrapper_on_small_images():
    gen = torch.Generator().manual_seed(0)
    for shape in [(4, 1, 28, 28), (4, 3, 32, 32)]:
        x = torch.nn.functional.interpolate(torch.rand(shape[:2] + (7, 7), generator=gen), size=shape[2:],
                                            mode="bilinear")
        same = ms_ssim_upsampled(x, x.clone())
        assert same.shape == (4,) and torch.allclose(same, torch.ones(4), atol=1e-4)
        noisy = ms_ssim_upsampled(x, (x + 0.2 * torch.randn(shape, generator=gen)).clamp(0, 1))
        assert (noisy < 0.95).all()
        worse = ms_ssim_upsampled(x, (x + 0.5 * torch.randn(shape, generator=gen)).clamp(0, 1))
        assert (worse < noisy).all()


def test_ms_ssim_is_fp32_inside_a_bf16_autocast():
    """trainer.precision=bf16 evaluates under a bf16 autocast; MS-SSIM's filters overflow in bf16
    (every Figure 4 check run gave inf), so the metric leaves the autocast."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 28, 28, generator=gen)
    y = (x + 0.2 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    plain = ms_ssim_upsampled(x, y)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        inside = ms_ssim_upsampled(x, y)
    assert torch.isfinite(inside).all() and inside.dtype == torch.float32
    assert torch.allclose(inside, plain)


@pytest.mark.parametrize("latent, units, bits", [
    ("bernoulli", 78, 78.0), ("discrete", 26, 78.0), ("threshold", 64, 64.0), ("bridged_binary", 78, 78.0),
    ("bridged_bernoulli", 78, 78.0), ("bridged_signum", 49, 49 * math.log2(3)), ("bridged_categorical", 26, 78.0)])
def test_bits_accounting_fashion_mnist_at_0_1(latent, units, bits):
    assert ae.latent_size(0.1, (1, 28, 28), latent, categories=8) == (units, pytest.approx(bits))


def test_bits_accounting_rgb_and_the_model_code_size():
    assert ae.latent_size(0.1, (3, 32, 32), "threshold") == (300, 300.0)  # 307 bits -> 3 x 10 x 10
    assert ae.latent_size(0.00097, (3, 512, 512), "bridged_binary")[0] == 762
    assert ae.latent_size(0.00097, (3, 512, 512), "bridged_signum")[0] == 481
    cfg = compose_config(["+experiment=vae_fmnist", "latent=bridged_signum", "model.widths=[8,8]", "latent.bpp=0.05"])
    model, units, bits = ae.make_autoencoder(parse(cfg), (1, 28, 28))
    code = model.eval().encode(torch.rand(5, 1, 28, 28))[0]
    assert code.shape == (5, units) == (5, 24) and set(code.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert bits / 784 <= 0.05


def test_too_small_bpp_names_the_smallest_valid_value():
    with pytest.raises(ConfigError, match=r"smallest valid value is 0\.002022") as err:
        ae.latent_size(0.001, (1, 28, 28), "bridged_signum")
    assert "latent.bpp=0.001" in str(err.value)
    assert ae.latent_size(0.002022, (1, 28, 28), "bridged_signum")[0] == 1  # the value named is valid
    with pytest.raises(ConfigError, match=r"0\.001276"):
        ae.latent_size(0.001, (1, 28, 28), "threshold")


def test_linear_probe_high_on_separable_codes_and_near_chance_on_random():
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (1200,), generator=gen)
    codes = torch.nn.functional.one_hot(y, 10).float() + 0.15 * torch.randn(1200, 10, generator=gen)
    assert linear_probe_accuracy(codes[:1000], y[:1000], codes[1000:], y[1000:]) > 0.95
    random = torch.randint(0, 2, (1200, 20), generator=gen).float()
    assert linear_probe_accuracy(random[:1000], y[:1000], random[1000:], y[1000:]) < 0.2


def test_fashion_mnist_trains_from_the_local_files(tmp_path):
    raw = REPO / "data" / "FashionMNIST" / "raw"
    if not (raw / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not under data/FashionMNIST/raw (run `make data`)")
    cfg = compose_config(["+experiment=vae_fmnist", f"dataset.root={REPO / 'data'}", *ae_overrides(tmp_path, 2)])
    task, _ = ae.build(parse(cfg), torch.device("cpu"))
    assert len(task.train.split) == 60000 and len(task.test.split) == 10000
    x, y = task.train_batch(0)
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert torch.equal(task.train_batch(5)[0], task.train_batch(5)[0])  # a batch is a function of the step


@pytest.mark.parametrize("preset, name", [("vae_fmnist", "fmnist"), ("vae_cifar10", "cifar10"),
                                          ("vae_imagenet", "imagenet")])
def test_missing_data_is_one_clear_error_and_no_metrics(preset, name, tmp_path, monkeypatch, main_inprocess):
    monkeypatch.delenv("DAB_DATA_ROOT", raising=False)
    real = ae.load_image_split
    monkeypatch.setattr(ae, "load_image_split", lambda *a, **k: real(*a, **{**k, "download": False}))  # offline
    code, _, err = main_inprocess(f"+experiment={preset}", f"dataset.root={tmp_path / 'nothing'}",
                                  f"runs_root={tmp_path / 'runs'}", "trainer.device=cpu",
                                  *(["dataset.workers=0"] if preset == "vae_imagenet" else []))
    assert code == 2 and err.count("error:") == 1 and f"'{name}' not found" in err
    assert not list((tmp_path / "runs").rglob("metrics.json"))


def test_too_small_bpp_exits_2_without_metrics(tmp_path, main_inprocess, synthetic_data):
    code, _, err = main_inprocess("+experiment=vae_fmnist", "latent.bpp=0.0001", f"runs_root={tmp_path / 'runs'}",
                                  "trainer.device=cpu")
    assert code == 2 and "smallest valid value is 0.001276" in err
    assert not list((tmp_path / "runs").rglob("metrics.json"))


@pytest.mark.parametrize("overrides, words", [
    (["latent.name=gumbel"], ["latent", "gumbel", "bridged_binary", "threshold"]),
    (["model=dense"], ["model for task autoencode", "conv_unet"]),
    (["latent=threshold", "dab=ste"], ["latent=threshold", "latent=bridged_binary"]),
    (["latent=bernoulli", "dab.estimator=reinforce"], ["latent=bernoulli", "dab.estimator", "bridged_bernoulli"]),
    (["latent=bridged_categorical", "latent.categories=1"], ["latent.categories", ">= 2"]),
    (["latent=bridged_bernoulli", "dab.estimator=gumbel", "dab.lam=3"], ["dab.lam", "estimator gumbel", "tau"]),
    (["latent.bpp=0"], ["latent.bpp", "> 0"]),
    (["latent=bernoulli", "latent.anneal=linear"], ["latent.anneal", "linear", "cosine_per_step", "exp_every"]),
    (["latent=bernoulli", "latent.tau_min=0"], ["latent.tau_min", "> 0 and < 1", "got 0"]),
    (["latent=bernoulli", "latent.tau_min=-0.1"], ["latent.tau_min", "> 0 and < 1", "got -0.1"]),
    (["latent=discrete", "latent.tau_min=1.0"], ["latent.tau_min", "> 0 and < 1", "got 1.0"]),
    (["latent=bernoulli", "latent.anneal_epochs=0"], ["latent.anneal_epochs", ">= 1", "null", "got 0"]),
    (["latent=bernoulli", "latent.anneal_epochs=-5"], ["latent.anneal_epochs", ">= 1", "null", "got -5"]),
    (["latent=bernoulli", "latent.anneal_epochs=0.5"], ["latent.anneal_epochs", ">= 1", "got 0.5"]),
])
def test_bad_autoencoder_config_names_valid_choices(overrides, words, tmp_path):
    from dab.suite.families import parse

    cfg = compose_config(["+experiment=vae_fmnist", *overrides])
    with pytest.raises(ConfigError) as err:
        parse(cfg)
    assert all(w in str(err.value) for w in words), str(err.value)
    assert "\n" not in str(err.value)  # one line


def test_good_annealing_settings_validate():
    from dab.suite.families import parse

    for extra in (["latent.tau_min=0.01"], ["latent.tau_min=0.99"], ["latent.anneal_epochs=1"],
                  ["latent.anneal_epochs=250"], ["latent.anneal=exp_every"]):
        parse(compose_config(["+experiment=vae_fmnist", "latent=bernoulli", *extra]))


def test_dab_loss_trains_only_the_approximator_in_the_model():
    cfg = compose_config(["+experiment=vae_fmnist", "latent=bridged_binary", "model.widths=[8,8]"])
    model, _, _ = ae.make_autoencoder(parse(cfg), (1, 28, 28))
    x = torch.rand(6, 1, 28, 28)
    logits, _, _ = model.train()(x)
    dab_loss = pop_dab_loss(model)
    assert dab_loss is not None and dab_loss > 0
    dab_loss.backward(retain_graph=True)
    assert all(p.grad is None or not p.grad.any() for p in model.encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.latent.bridge.approximator.parameters())
    model.zero_grad()
    ae.reconstruction_nll(logits, x).mean().backward()  # the task gradient reaches the encoder via the VJP
    assert all(p.grad is not None for p in model.encoder.parameters())
    assert model.encoder[0].weight.grad.abs().sum() > 0


def test_relaxed_temperature_anneals_every_10_steps_and_eval_codes_are_hard(tmp_path, synthetic_data):
    cfg = compose_config(["+experiment=vae_fmnist", "latent=discrete", "latent.anneal_rate=0.01",
                          *ae_overrides(tmp_path)])
    task, model = ae.build(parse(cfg), torch.device("cpu"))
    lat = model.latent
    assert isinstance(lat, RelaxedLatent)
    task.train_batch(20)
    assert float(lat.tau) == pytest.approx(math.exp(-0.2))
    task.train_batch(25)  # not a multiple of 10: unchanged
    assert float(lat.tau) == pytest.approx(math.exp(-0.2))
    task.train_batch(1000)
    assert float(lat.tau) == 0.5 == anneal_temperature(1000, 0.01, 0.5)  # tau_min for Gumbel
    code = model.eval().encode(task.train_batch(0)[0])[0].view(32, -1, 8)
    assert torch.equal(code.sum(-1), torch.ones(32, code.shape[1]))  # one-hot per variable
    model.train()
    soft = model.encode(task.train_batch(0)[0])[0]
    assert ((soft > 0) & (soft < 1)).any()  # relaxed while training


def reference_cosine_taus(steps: int, epochs: float, tau_min: float) -> list[float]:
    """The authors' Bernoulli reparameterizer (jramapuram/vae ba60361) written out as a loop: tau
    starts at 1.0; every training forward after the first first moves tau towards tau_min by
    (1 + cos(pi / epochs)) / 2 of the gap, clipped to [1e-8, 1.0], then samples."""
    taus, tau = [], 1.0
    for forward in range(steps):
        if forward > 0:
            tau = tau_min + (tau - tau_min) * (1 + math.cos(math.pi * -1 / epochs)) / 2
            tau = min(max(tau, 1e-8), 1.0)
        taus.append(tau)
    return taus


def test_bernoulli_default_is_the_paper_era_cosine_schedule_fitted_to_max_steps(tmp_path, synthetic_data):
    cfg = compose_config(["+experiment=vae_fmnist", "latent=bernoulli", *ae_overrides(tmp_path, steps=300)])
    assert (cfg.latent.anneal, cfg.latent.tau_min, cfg.latent.anneal_epochs) == ("cosine_per_step", 0.3, None)
    task, model = ae.build(parse(cfg), torch.device("cpu"))
    epochs = math.pi * math.sqrt(300 / 12)  # 300 * pi^2 / (4 E^2) = 3
    assert cosine_epochs_for_steps(300) == pytest.approx(epochs, rel=1e-15)
    expected = reference_cosine_taus(300, epochs, 0.3)
    seen = []
    for step in range(300):
        task.train_batch(step)
        seen.append(float(model.latent.tau))
    assert seen == pytest.approx(expected, rel=1e-6, abs=0)  # the buffer is float32
    schedule = model.latent.schedule
    assert [schedule(s) for s in range(300)] == pytest.approx(expected, rel=1e-13, abs=0)  # the float64 schedule
    assert seen[0] == 1.0 and all(a > b for a, b in zip(seen, seen[1:]))
    gap = (expected[-1] - 0.3) / 0.7  # 299 updates: exp(-3 * 299/300 * (1 + 1/600)) = exp(-2.995)
    assert math.exp(-3.05) < gap < math.exp(-2.95) and seen[-1] <= 0.34
    task.train_batch(7)  # a resumed run jumps straight to its step's value
    assert float(model.latent.tau) == pytest.approx(expected[7], rel=1e-6)


def test_explicit_anneal_epochs_fix_e_as_the_reference_does(tmp_path, synthetic_data):
    cfg = compose_config(["+experiment=vae_fmnist", "latent=bernoulli", "latent.anneal_epochs=4",
                          "latent.tau_min=0.2", *ae_overrides(tmp_path, steps=5000)])
    task, model = ae.build(parse(cfg), torch.device("cpu"))
    expected = reference_cosine_taus(60, 4.0, 0.2)  # E = 4: gap x 0.854 per step, 1e-4 of it left after 59 steps
    assert [model.latent.schedule(s) for s in range(60)] == pytest.approx(expected, rel=1e-13, abs=0)
    task.train_batch(59)
    assert float(model.latent.tau) == pytest.approx(expected[59], rel=1e-6) and expected[59] < 0.2 + 1e-4


def test_gumbel_schedule_is_the_reference_exponential_every_10_steps(tmp_path, synthetic_data):
    """The authors' Gumbel reparameterizer (ba60361): tau0 = 1; at training iterations that are a
    positive multiple of 10, tau = max(0.5, exp(-3e-6 * iteration)); unchanged in between."""
    cfg = compose_config(["+experiment=vae_fmnist", "latent=discrete", *ae_overrides(tmp_path)])
    assert (cfg.latent.anneal, cfg.latent.tau_min, cfg.latent.anneal_rate, cfg.latent.anneal_every) == (
        "exp_every", 0.5, 3e-6, 10)
    _, model = ae.build(parse(cfg), torch.device("cpu"))
    tau, steps = 1.0, [*range(0, 40), 999, 1000, 1001, 123_456, 230_000, 250_007]
    reference = {}
    for it in range(max(steps) + 1):
        if it > 0 and it % 10 == 0:
            tau = max(math.exp(-3e-6 * it), 0.5)
        reference[it] = tau
    for step in steps:
        assert model.latent.schedule(step) == pytest.approx(reference[step], rel=1e-13)
    assert model.latent.schedule(250_007) == 0.5  # exp(-0.75) < 0.5: the floor


def test_a_300_step_bernoulli_run_ends_near_tau_min_and_logs_tau(tmp_path, synthetic_data):
    """``train.py +experiment=vae_fmnist latent=bernoulli trainer.max_steps=300`` in small: tau ends
    at <= 0.4 (train/tau_final in metrics.json), every log step's train/tau reaches TensorBoard, and
    the posterior probe is reported beside the hard-code one."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose_config(["+experiment=vae_fmnist", "latent=bernoulli", *ae_overrides(tmp_path, steps=300),
                          "trainer.log_every=50", "trainer.eval_every=300", "dataset.batch_size=8",
                          "model.widths=[8,8]"])  # small: 300 steps in a few seconds
    run_experiment(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    taus = reference_cosine_taus(300, math.pi * math.sqrt(300 / 12), 0.3)
    assert saved["train/tau_final"] <= 0.4
    assert saved["train/tau_final"] == pytest.approx(taus[-1], rel=1e-6) == pytest.approx(saved["test/tau"])
    assert 0.0 <= saved["test/linear_acc_posterior"] <= 1.0 and 0.0 <= saved["test/linear_acc"] <= 1.0
    events = EventAccumulator(str(tmp_path / "run" / "tb")).Reload()
    logged = {e.step: e.value for e in events.Scalars("train/tau")}
    assert sorted(logged) == [50, 100, 150, 200, 250, 300]
    for step, value in logged.items():  # the mean over the log window of the steps it covers
        assert value == pytest.approx(sum(taus[step - 50:step]) / 50, rel=1e-5)


def test_discrete_run_logs_tau_too(tmp_path, synthetic_data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose_config(["+experiment=vae_fmnist", "latent=discrete", "latent.anneal_rate=0.01",
                          *ae_overrides(tmp_path, steps=20)])
    m = run_experiment(cfg, tmp_path / "run")
    logged = {e.step: e.value for e in EventAccumulator(str(tmp_path / "run" / "tb")).Reload().Scalars("train/tau")}
    assert logged[1] == 1.0 and logged[20] == pytest.approx(math.exp(-0.1))  # step 19 trained at step 10's tau
    assert m["train/tau_final"] == pytest.approx(math.exp(-0.1))


@pytest.mark.parametrize("latent", ["bernoulli", "discrete", "bridged_bernoulli"])
def test_posterior_probe_reads_the_posterior_probabilities(latent, tmp_path, synthetic_data, monkeypatch):
    """evaluate() fits two probes for a stochastic latent: one on the hard codes (a random draw),
    one on the posterior's probabilities of the same images, i.e. sigmoid(h) or the softmax per
    K-way variable of the encoder's output h."""
    cfg = compose_config(["+experiment=vae_fmnist", f"latent={latent}", *ae_overrides(tmp_path)])
    task, model = ae.build(parse(cfg), torch.device("cpu"))
    model.eval()
    calls = []
    real = ae.linear_probe_accuracy
    monkeypatch.setattr(ae, "linear_probe_accuracy", lambda *a: calls.append(a) or real(*a))
    m = task.evaluate(model)
    assert len(calls) == 2 and "test/linear_acc_posterior" in m
    (hard_train, _, hard_test, _), (post_train, y_train, post_test, y_test) = calls
    assert set(hard_train.unique().tolist()) <= {0.0, 1.0}
    x_train = torch.cat([x for x, _ in task.train.chunks(cfg.dataset.probe_size)])
    x_test = torch.cat([x for x, _ in task.test.chunks(cfg.dataset.test_size)])
    with torch.no_grad():
        h_train, h_test = model.encoder(x_train), model.encoder(x_test)
    if latent == "discrete":
        want_train = torch.softmax(h_train.view(len(h_train), -1, 8), -1)
        assert torch.allclose(post_train.view(len(h_train), -1, 8).sum(-1), torch.ones(1))  # per variable
        want_train, want_test = want_train.flatten(1), torch.softmax(h_test.view(len(h_test), -1, 8), -1).flatten(1)
    else:
        want_train, want_test = torch.sigmoid(h_train), torch.sigmoid(h_test)
    assert torch.allclose(post_train, want_train, atol=1e-6) and torch.allclose(post_test, want_test, atol=1e-6)
    assert ((post_train > 0) & (post_train < 1)).all()  # probabilities, not a draw
    assert "test/linear_acc_posterior" in ae.AutoencodingTask.percent_metrics


def test_posterior_of_the_bridged_bernoulli_is_what_it_samples_from():
    cfg = compose_config(["+experiment=vae_fmnist", "latent=bridged_bernoulli"])
    lat = make_bridged_latent("bridged_bernoulli", 6, cfg.dab).eval()
    h = torch.linspace(-3, 3, 6).repeat(4000, 1)
    torch.manual_seed(0)
    draws = lat(h)[0]
    assert torch.allclose(draws.mean(0), lat.posterior(h)[0], atol=0.03)
    assert torch.equal(lat.posterior(h), torch.sigmoid(h))
    assert make_bridged_latent("bridged_binary", 6, cfg.dab).posterior(h) is None


@pytest.mark.parametrize("latent, estimator", [
    ("bridged_binary", "dab"), ("bridged_binary", "ste"), ("bridged_binary", "blackbox"),
    ("bridged_binary", "perturbed"), ("bridged_signum", "perturbed"), ("bridged_bernoulli", "gumbel"),
    ("bridged_bernoulli", "gumbel_st"), ("bridged_bernoulli", "reinmax"), ("bridged_bernoulli", "reinforce"),
    ("bridged_categorical", "gumbel_st"), ("bridged_categorical", "reinmax"), ("bridged_categorical", "reinforce")])
def test_a_bridged_latent_trains_with_the_estimator_dab_estimator_names(latent, estimator, tmp_path, synthetic_data):
    """dab.estimator picks the bridged latents' estimator; the encoder gets a gradient from it
    (reinforce: through the score-function term that the task's loss adds)."""
    cfg = compose_config(["+experiment=vae_fmnist", f"latent={latent}", f"dab.estimator={estimator}",
                          *ae_overrides(tmp_path, steps=2)])
    task, model = ae.build(parse(cfg), torch.device("cpu"))
    assert model.latent.bridge.estimator == estimator
    model.train()
    loss, _ = task.loss(model, task.train_batch(0))
    loss.backward()
    encoder_grads = [p.grad for p in model.encoder.parameters() if p.grad is not None]
    assert encoder_grads and any(g.abs().sum() > 0 for g in encoder_grads)
    m = run_experiment(cfg, tmp_path / "run")
    assert m["train/steps"] == 2 and m["test/recon_loss"] > 0


@pytest.mark.parametrize("latent, estimator, words", [
    ("bridged_binary", "reinmax", ["reinmax", "binary", "estimator=perturbed"]),
    ("bridged_bernoulli", "blackbox", ["blackbox", "bernoulli", "estimator=reinforce"]),
    ("bridged_bernoulli", "softsort", ["softsort", "bernoulli", "estimator=gumbel"])])
def test_an_estimator_that_does_not_suit_the_latent_is_one_line_naming_those_that_do(latent, estimator, words, tmp_path):
    cfg = compose_config(["+experiment=vae_fmnist", f"latent={latent}", f"dab.estimator={estimator}",
                          *ae_overrides(tmp_path)])
    with pytest.raises(ConfigError) as err:
        ae.make_autoencoder(parse(cfg), (1, 28, 28))
    assert all(w in str(err.value) for w in words) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize("preset", AE_PRESETS)
def test_each_preset_trains_on_synthetic_data_and_learns(preset, tmp_path, synthetic_data):
    """Each preset (one model each) composes and trains a short run on class-prototype images of
    its data set's shape: it writes its outputs, counts its bits, and learns something: the test
    reconstruction loss falls well below the untrained model's (the conv decoder's also below the
    mean image's; the dense decoders start from random per-pixel biases and need longer for that)
    and the codes carry the class (probe well above 10%)."""
    lr = ["optimizer.lr=1e-3"] if preset != "vae_fmnist" else []  # the paper's 1e-4 is slow for 30 steps
    bpp = 0.05 if preset == "vae_imagenet" else 0.1  # imagenet is 32x32 here
    steps, batch = (10, 16) if preset == "vae_imagenet" else (30, 32)  # ResNet18 is the slow one on a CPU
    cfg = compose_config([f"+experiment={preset}", "latent=bridged_signum", f"latent.bpp={bpp}", *lr,
                          *ae_overrides(tmp_path, steps, preset), "dataset.test_size=64", "dataset.probe_size=512",
                          f"dataset.batch_size={batch}"])
    torch.manual_seed(cfg.seed)  # the very initialisation run_experiment starts from
    task, untrained = ae.build(parse(cfg), torch.device("cpu"))
    before = task.evaluate(untrained.eval())
    m = run_experiment(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["objective"] == "test/ms_ssim" and saved["train/steps"] == steps
    assert (tmp_path / "run" / "reconstructions.png").is_file()
    c, h, w = image_shape(cfg.dataset.name, 32)
    units = int(bpp * c * h * w / math.log2(3))
    assert m["test/latent_units"] == units
    assert m["test/bpp"] == pytest.approx(units * math.log2(3) / (c * h * w))
    assert 0.0 <= m["test/ms_ssim"] <= 1.0

    assert m["test/recon_loss"] < 0.98 * before["test/recon_loss"]
    assert m["test/linear_acc"] > 0.3
    if preset == "vae_fmnist":
        x = torch.cat([x for x, _ in task.test.chunks(64)])
        mean = torch.cat([x for x, _ in task.train.chunks(512)]).mean(0, keepdim=True).clamp(1e-4, 1 - 1e-4)
        assert m["test/recon_loss"] < float(ae.reconstruction_nll(torch.logit(mean).expand_as(x), x).mean())


@pytest.mark.slow
@pytest.mark.parametrize("latent", LATENTS.names())
def test_real_fashion_mnist_short_run_beats_mean_image_and_chance(latent, tmp_path):
    """The README's CPU check in small: 200 steps on the real data (about a minute per variant)."""
    if not (REPO / "data" / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not under data/FashionMNIST/raw (run `make data`)")
    cfg = compose_config(["+experiment=vae_fmnist", f"latent={latent}", f"dataset.root={REPO / 'data'}",
                          "model.widths=[16,32,32]", "dataset.test_size=1000", "dataset.probe_size=2000",
                          "trainer.max_steps=200", "trainer.eval_every=200", "trainer.ckpt_every=200",
                          "trainer.progress=false", "trainer.device=cpu", f"runs_root={tmp_path / 'runs'}"])
    m = run_experiment(cfg, tmp_path / "run")
    task, _ = ae.build(parse(cfg), torch.device("cpu"))
    x = torch.cat([x for x, _ in task.test.chunks(1000)])
    mean = (task.train.split.images.float() / 255).mean(0, keepdim=True).clamp(1e-4, 1 - 1e-4)
    assert m["test/ms_ssim"] > float(ms_ssim_upsampled(mean.expand_as(x), x).mean())
    if latent != "threshold":  # near-binary reconstructions pay a large NLL on grey pixels
        assert m["test/recon_loss"] < float(ae.reconstruction_nll(torch.logit(mean).expand_as(x), x).mean())
    assert m["test/linear_acc"] > 0.3
