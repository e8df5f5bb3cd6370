//! A timm model exported by real PyTorch, trained from Rust, and read back
//! by PyTorch: head reset, optimizer steps, EMA, freezing, saving, errors.

mod common;

use asl::loss::AsymmetricLoss;
use asl::model::{ModelEma, Network, ParamGroup};
use asl::train::{Adam, OptimizerConfig, StepHyper};
use common::python::{export_model, python_forward};
use tch::{Device, Kind, Tensor};

const SIZE: usize = 64;

fn exported(dir: &std::path::Path, classes: usize) -> std::path::PathBuf {
    let path = dir.join("test_resnet.pt");
    export_model("test_resnet", classes, SIZE, &path);
    path
}

fn fixed_batch() -> (Tensor, Tensor) {
    tch::manual_seed(1);
    let images = Tensor::rand([4, 3, SIZE as i64, SIZE as i64], (Kind::Float, Device::Cpu));
    let targets =
        Tensor::from_slice(&[1.0f32, 0., 0., 1., 0., 0., 1., 0., 0., 0., 0., 0., 0., 1., 1., 1., 0., 0., 0., 0.])
            .view([4, 5]);
    (images, targets)
}

fn flat(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.contiguous().view([-1])).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn finetune_save_and_reload_in_python() {
    let dir = tempfile::tempdir().unwrap();
    let mut network = Network::load(&exported(dir.path(), 10), Device::Cpu).unwrap();
    assert_eq!(network.check_input_size(SIZE as i64).unwrap(), 10);
    let names: Vec<String> = (0..5).map(|i| format!("class{i}")).collect();
    network.reset_head(5, Some(names.clone()), 0).unwrap();

    let params = network.trainable_parameters().unwrap();
    assert!(params.iter().any(|p| p.name == "fc.bias" && p.group == ParamGroup::NoDecay));
    assert!(params.iter().any(|p| p.name == "fc.weight" && p.group == ParamGroup::Decay));
    assert!(params.iter().all(|p| !p.name.contains("running_")), "BatchNorm statistics must not be trained");
    let mut optimizer = Adam::new(params, OptimizerConfig::default()).unwrap();
    let mut ema = ModelEma::new(&network, 0.9).unwrap();
    let loss = AsymmetricLoss::asl();
    let (images, targets) = fixed_batch();

    network.set_train(true).unwrap();
    let mut losses = Vec::new();
    for _ in 0..4 {
        optimizer.zero_grad().unwrap();
        let logits = network.forward(&images).unwrap();
        assert_eq!(logits.size(), [4, 5]);
        let value = loss.forward(&logits, &targets).unwrap();
        losses.push(value.double_value(&[]));
        value.backward();
        optimizer.step(StepHyper { lr: 1e-2, beta1: 0.9 }, None).unwrap();
        ema.update(&network, None).unwrap();
    }
    assert!(losses[3] < losses[0], "loss should drop over 3 steps: {losses:?}");

    network.set_train(false).unwrap();
    let model_path = dir.path().join("finetuned.pt");
    let ema_path = dir.path().join("finetuned_ema.pt");
    network.save(&model_path).unwrap();
    ema.save(&ema_path).unwrap();
    let input = flat(&images);
    for (net, path) in [(&network, &model_path), (ema.network(), &ema_path)] {
        let ours = flat(&tch::no_grad(|| net.forward(&images).unwrap()));
        let theirs = python_forward(path, &input, [4, 3, SIZE, SIZE], dir.path());
        assert!(max_abs_diff(&ours, &theirs) < 1e-5, "{}: Rust and Python outputs differ", path.display());
    }
    let reloaded = Network::load(&model_path, Device::Cpu).unwrap();
    let card = reloaded.card();
    assert_eq!(card.num_classes, 5);
    assert_eq!(card.class_names.as_ref().unwrap(), &names);
}

#[test]
fn ema_averages_buffers_and_differs_from_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut network = Network::load(&exported(dir.path(), 5), Device::Cpu).unwrap();
    let mut ema = ModelEma::new(&network, 0.5).unwrap();
    let running_mean = |net: &Network| {
        let tensors = net.named_tensors().unwrap();
        let (_, t) = tensors.iter().find(|(n, _)| n.ends_with("running_mean")).unwrap();
        flat(t)
    };
    let before = running_mean(&network);
    network.set_train(true).unwrap();
    let _ = tch::no_grad(|| network.forward(&fixed_batch().0).unwrap());
    let after = running_mean(&network);
    ema.update(&network, None).unwrap();
    let averaged = running_mean(ema.network());
    for ((b, a), e) in before.iter().zip(&after).zip(&averaged) {
        assert!((e - (0.5 * b + 0.5 * a)).abs() < 1e-6, "EMA of a running mean: {e} vs {}", 0.5 * b + 0.5 * a);
    }
    assert_ne!(before, after, "a train-mode forward must move BatchNorm statistics");
}

#[test]
fn frozen_parameters_do_not_change() {
    let dir = tempfile::tempdir().unwrap();
    let mut network = Network::load(&exported(dir.path(), 5), Device::Cpu).unwrap();
    let frozen = network.freeze(&["conv1".to_string()]).unwrap();
    assert!(frozen > 0);
    let params = network.trainable_parameters().unwrap();
    assert!(params.iter().all(|p| !p.name.starts_with("conv1")));
    let snapshot = |net: &Network| {
        net.named_tensors().unwrap().into_iter().filter(|(n, _)| n == "conv1.0.weight").map(|(_, t)| flat(&t)).next()
    };
    let before = snapshot(&network).unwrap();
    let mut optimizer = Adam::new(params, OptimizerConfig::default()).unwrap();
    network.set_train(true).unwrap();
    let (images, targets) = fixed_batch();
    AsymmetricLoss::asl().forward(&network.forward(&images).unwrap(), &targets).unwrap().backward();
    optimizer.step(StepHyper { lr: 1e-2, beta1: 0.9 }, None).unwrap();
    assert_eq!(snapshot(&network).unwrap(), before);
}

#[test]
fn bad_model_files_and_sizes_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pt");
    let err = Network::load(&missing, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("nope.pt does not exist") && err.contains("asl export --model"), "{err}");

    let garbage = dir.path().join("garbage.pt");
    std::fs::write(&garbage, b"not a zip archive").unwrap();
    let err = Network::load(&garbage, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("garbage.pt is not a TorchScript module"), "{err}");

    // A traced classifier that only takes 8×8 inputs, first without a card.
    let fixed = dir.path().join("fixed.pt");
    common::python::run_python(&[
        "-c",
        &format!(
            "import torch; m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 2)); \
             torch.jit.trace(m, torch.rand(1, 3, 8, 8)).save('{}')",
            fixed.display()
        ),
    ]);
    let err = Network::load(&fixed, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("fixed.pt has no model card") && err.contains("fixed.json"), "{err}");
    assert!(err.contains("asl export --model NAME") && err.contains("models/README.md"), "{err}");
    // A hand-written card that names no head and no normalisation.
    let card = r#"{"model": "traced", "input_size": 8, "num_features": 192, "num_classes": 2, "classifier": []}"#;
    std::fs::write(asl::model::card_path(&fixed), card).unwrap();
    let mut network = Network::load(&fixed, Device::Cpu).unwrap();
    network.check_input_size(8).unwrap();
    let err = network.check_input_size(16).unwrap_err().to_string();
    assert!(err.contains("traced cannot take 16×16 inputs: "), "{err}");
    let err = network.reset_head(3, None, 0).unwrap_err().to_string();
    assert!(err.contains("its model card names none"), "{err}");
    let err = network.input_normalization().unwrap_err().to_string();
    assert!(err.contains("records no input mean and std: set model.input_mean and model.input_std"), "{err}");

    let path = exported(dir.path(), 5);

    // A card that names a classifier the module does not have.
    let card_path = asl::model::card_path(&path);
    let card = std::fs::read_to_string(&card_path).unwrap().replace("\"fc.weight\"", "\"head.fc.weight\"");
    std::fs::write(&card_path, card.replace("\"test_resnet\"", "\"tresnet_m\"")).unwrap();
    let mut network = Network::load(&path, Device::Cpu).unwrap();
    let err = network.reset_head(3, None, 0).unwrap_err().to_string();
    assert!(err.contains("classifier parameter `head.fc.weight` not found"), "{err}");
    let err = network.check_input_size(100).unwrap_err().to_string();
    assert_eq!(err, "tresnet_m cannot take 100×100 inputs: the input size must be a positive multiple of 32");
}

#[test]
fn export_applies_timm_and_model_zoo_weights() {
    let dir = tempfile::tempdir().unwrap();
    let result = common::python::run_python(&["tests/support/export_weights_check.py", dir.path().to_str().unwrap()]);
    assert_eq!(result.trim(), "ok");
}

#[test]
fn a_channels_last_network_gives_the_same_outputs_and_saves_for_python() {
    let dir = tempfile::tempdir().unwrap();
    let path = exported(dir.path(), 6);
    let (images, _) = fixed_batch();
    let plain = Network::load(&path, Device::Cpu).unwrap();
    let expected = flat(&tch::no_grad(|| plain.forward(&images).unwrap()));
    let mut network = Network::load(&path, Device::Cpu).unwrap();
    network.to_channels_last().unwrap();
    let kernels: Vec<_> = network.named_tensors().unwrap().into_iter().filter(|(_, t)| t.dim() == 4).collect();
    assert!(!kernels.is_empty() && kernels.iter().all(|(_, t)| asl::ops::is_channels_last(t)));
    let ours = flat(&tch::no_grad(|| network.forward(&asl::ops::channels_last(&images).unwrap()).unwrap()));
    assert!(max_abs_diff(&ours, &expected) < 1e-5, "channels-last changes the outputs");
    let saved = dir.path().join("nhwc.pt");
    network.save(&saved).unwrap();
    let theirs = python_forward(&saved, &flat(&images), [4, 3, SIZE, SIZE], dir.path());
    assert!(max_abs_diff(&theirs, &expected) < 1e-5, "Python reads the channels-last file differently");
}
