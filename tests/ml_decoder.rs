//! The ML-Decoder head and finetuning: the same outputs as the official
//! code, exported by real PyTorch, trained from Rust with the backbone frozen
//! and the head at its own learning rate, given new class counts, read back
//! by PyTorch; a finetune of TResNet-M with it on the real COCO slice; the
//! head-reset rule; and cards without input normalisation.

mod common;

use asl::loss::AsymmetricLoss;
use asl::model::{HeadLayout, Network};
use asl::train::{prepare, Adam, Observer, OptimizerConfig, RunOptions, StepHyper, TrainConfig, TrainEvent};
use common::coco_mini::coco_mini;
use common::python::{export_model_with, python_forward, run_python};
use std::path::Path;
use tch::{Device, Kind, Tensor};

const SIZE: usize = 64;

fn flat(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.contiguous().view([-1])).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn tensor(network: &Network, name: &str) -> Tensor {
    let tensors = network.named_tensors().unwrap();
    tensors.into_iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name}")).1
}

fn std_of(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).std(true).double_value(&[])
}

#[test]
fn the_head_matches_the_official_forward_and_official_checkpoints_export() {
    let dir = tempfile::tempdir().unwrap();
    let result = run_python(&["tests/support/ml_decoder_check.py", dir.path().to_str().unwrap()]);
    assert_eq!(result.trim(), "ok");
}

#[test]
fn an_ml_decoder_network_trains_from_rust_takes_new_class_counts_and_reloads_in_python() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mld.pt");
    export_model_with("test_resnet", 5, SIZE, &path, &["--head", "ml-decoder"]);
    let mut network = Network::load(&path, Device::Cpu).unwrap();
    let Some(HeadLayout::MlDecoder { max_groups: 100, .. }) = network.card().head_layout() else {
        panic!("the card names an ML-Decoder head: {:?}", network.card().head)
    };
    tch::manual_seed(3);
    let images = Tensor::rand([4, 3, SIZE as i64, SIZE as i64], (Kind::Float, Device::Cpu));
    let ours = flat(&tch::no_grad(|| network.forward(&images).unwrap()));
    let theirs = python_forward(&path, &flat(&images), [4, 3, SIZE, SIZE], dir.path());
    assert!(max_abs_diff(&ours, &theirs) < 1e-5, "Rust and PyTorch run the exported head differently");

    // 250 classes: K = 100 queries, each answering for 3 classes (the last 50 outputs cut off).
    network.reset_head(250, None, 1).unwrap();
    assert_eq!(tensor(&network, "head.queries").size(), [100, 768]);
    let weight = tensor(&network, "head.group_weight");
    assert_eq!(weight.size(), [100, 768, 3]);
    // Xavier-normal for [K, D, g]: std √(2 / ((D + K)·g)) = 0.0277; nn.Embedding's queries: N(0, 1).
    let expected = (2.0f64 / ((768.0 + 100.0) * 3.0)).sqrt();
    assert!((std_of(&weight) / expected - 1.0).abs() < 0.02, "group FC std {} vs {expected}", std_of(&weight));
    assert!((std_of(&tensor(&network, "head.queries")) - 1.0).abs() < 0.02);
    assert!(bool::try_from(tensor(&network, "head.group_bias").eq(0.0).all()).unwrap());
    network.set_train(false).unwrap();
    assert_eq!(tch::no_grad(|| network.forward(&images).unwrap()).size(), [4, 250]);

    // 7 classes in 7 groups; train only the head, at 10× the backbone's rate (1e-4).
    let names: Vec<String> = (0..7).map(|i| format!("label{i}")).collect();
    network.reset_head(7, Some(names.clone()), 2).unwrap();
    assert_eq!(tensor(&network, "head.group_weight").size(), [7, 768, 1]);
    let frozen = network.freeze_backbone().unwrap();
    assert!(frozen > 10, "the backbone's parameters are frozen ({frozen})");
    let params = network.trainable_parameters().unwrap();
    assert!(params.iter().all(|p| p.in_head && p.name.starts_with("head.")), "only the head trains");
    assert!(!params.iter().any(|p| p.name == "head.queries"), "the queries are fixed, as in the paper");
    let backbone_before = flat(&tensor(&network, "backbone.conv1.0.weight"));
    let head_before = flat(&tensor(&network, "head.proj.weight"));
    let config = OptimizerConfig { head_lr_scale: 10.0, ..OptimizerConfig::default() };
    let mut optimizer = Adam::new(params, config).unwrap();
    let targets = Tensor::from_slice(&[
        1.0f32, 0., 0., 1., 0., 0., 0., 0., 1., 0., 0., 0., 1., 0., 0., 0., 0., 0., 1., 1., 0., 1., 0., 0., 0., 0., 0.,
        1.,
    ])
    .view([4, 7]);
    network.set_train(true).unwrap();
    let loss = AsymmetricLoss::asl();
    let mut losses = Vec::new();
    for _ in 0..5 {
        optimizer.zero_grad().unwrap();
        let value = loss.forward(&network.forward(&images).unwrap(), &targets).unwrap();
        losses.push(value.double_value(&[]));
        value.backward();
        optimizer.step(StepHyper { lr: 1e-5, beta1: 0.9 }, None).unwrap();
    }
    assert!(losses[4] < losses[0], "the loss falls: {losses:?}");
    assert_eq!(flat(&tensor(&network, "backbone.conv1.0.weight")), backbone_before, "a frozen backbone moved");
    assert_ne!(flat(&tensor(&network, "head.proj.weight")), head_before, "the head did not learn");

    network.set_train(false).unwrap();
    let saved = dir.path().join("finetuned.pt");
    network.save(&saved).unwrap();
    let ours = flat(&tch::no_grad(|| network.forward(&images).unwrap()));
    let theirs = python_forward(&saved, &flat(&images), [4, 3, SIZE, SIZE], dir.path());
    assert_eq!(ours.len(), 4 * 7);
    assert!(max_abs_diff(&ours, &theirs) < 1e-5, "PyTorch reads the finetuned head differently");
    let reloaded = Network::load(&saved, Device::Cpu).unwrap();
    assert_eq!((reloaded.card().num_classes, reloaded.card().class_names.as_ref()), (7, Some(&names)));
}

/// The training loss of each epoch, and the notices.
#[derive(Default)]
struct Losses {
    epochs: Vec<f64>,
    notices: Vec<String>,
}

impl Observer for Losses {
    fn on_event(&mut self, event: &TrainEvent<'_>) {
        match event {
            TrainEvent::EpochFinished { record, .. } => self.epochs.push(record.train_loss),
            TrainEvent::Notice(text) => self.notices.push(text.to_string()),
            _ => {}
        }
    }
}

#[test]
#[cfg_attr(
    not(asl_coco_mini),
    ignore = "needs ../shared/data/coco-mini, the real COCO slice; absent when this was built"
)]
fn tresnet_m_with_ml_decoder_finetunes_on_coco_mini() {
    let root = coco_mini();
    let dir = tempfile::tempdir().unwrap();
    let imagenet_mean = [0.485, 0.456, 0.406];
    let data = format!("data.path={}", root.display());
    let sets: Vec<String> = [
        &data,
        "model.timm=tresnet_m",
        "model.weights=null",
        "model.reset_head=always",
        "model.input_mean=[0.485, 0.456, 0.406]",
        "model.input_std=[0.229, 0.224, 0.225]",
        "optimizer.head_lr_scale=10",
        "schedule.max_lr=3.0e-4",
        "data.image_size=224",
        "data.batch_size=8",
        "data.val_batch_size=16",
        "train.max_steps_per_epoch=12",
        "train.epochs=2",
        "schedule.scheduled_epochs=2",
        "train.log_every=4",
        "device=cpu",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let config = TrainConfig::load(Path::new("configs/coco-ml-decoder.yaml"), &sets).unwrap();
    let mut losses = Losses::default();
    let options = RunOptions { run_dir: dir.path().join("run"), ..RunOptions::default() };
    let mut trainer = prepare(config, options, &mut losses).unwrap();
    assert!(
        losses.notices.iter().any(|n| n.contains("resetting the head of tresnet_m for 80 classes")),
        "{:?}",
        losses.notices
    );
    trainer.run(&mut losses).unwrap();
    assert_eq!(losses.epochs.len(), 2);
    assert!(losses.epochs[1] < losses.epochs[0], "the loss must fall: {:?}", losses.epochs);
    let saved = Network::load(&dir.path().join("run/checkpoints/last/model.pt"), Device::Cpu).unwrap();
    assert_eq!(saved.input_normalization().unwrap().0, imagenet_mean, "the override is saved with the model");
    assert!(matches!(saved.card().head_layout(), Some(HeadLayout::MlDecoder { .. })));
}

#[test]
fn the_head_is_reset_by_the_reset_head_rule_and_a_card_without_normalisation_stops_the_run() {
    let f = common::training::Fixture::new();
    let card_file = asl::model::card_path(&f.model);
    let original: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&card_file).unwrap()).unwrap();
    let write_card = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut card = original.clone();
        edit(&mut card);
        std::fs::write(&card_file, serde_json::to_string(&card).unwrap()).unwrap();
    };
    let notices = |name: &str, extra: &[&str]| -> Result<Vec<String>, String> {
        let config = TrainConfig::load(Path::new("configs/demo.yaml"), &f.library_sets(extra)).unwrap();
        let options = RunOptions { run_dir: f.runs().join(name), ..RunOptions::default() };
        let mut seen = Losses::default();
        prepare(config, options, &mut seen).map(|_| seen.notices).map_err(|e| e.to_string())
    };
    let reset = |notices: &[String]| notices.iter().find(|n| n.starts_with("resetting the head")).cloned();

    // 12 outputs for 12 classes and no names: nothing says the head is wrong.
    assert_eq!(reset(&notices("same", &[]).unwrap()), None);
    // The same count, trained for other labels: auto resets, never keeps.
    write_card(&|card| card["class_names"] = (0..12).map(|i| format!("other{i}")).collect());
    let auto = reset(&notices("renamed", &[]).unwrap()).expect("auto resets a head trained for other labels");
    assert!(auto.ends_with("its class names differ from the data's"), "{auto}");
    assert_eq!(reset(&notices("kept", &["model.reset_head=never"]).unwrap()), None);
    // always resets even a head that fits.
    write_card(&|_| {});
    let always = reset(&notices("always", &["model.reset_head=always"]).unwrap()).unwrap();
    assert!(always.ends_with("model.reset_head is always"), "{always}");
    // Another class count under never is an error that names the key.
    write_card(&|card| card["num_classes"] = 5.into());
    let err = notices("never", &["model.reset_head=never"]).unwrap_err();
    assert!(err.contains("it has 5 classes and the data 12") && err.contains("model.reset_head is never"), "{err}");
    // A card without mean and std stops the run, unless the config gives them.
    write_card(&|card| {
        card.as_object_mut().unwrap().remove("mean");
    });
    let err = notices("unnormalised", &[]).unwrap_err();
    assert!(err.contains("records no input mean and std: set model.input_mean and model.input_std"), "{err}");
    notices("normalised", &["model.input_mean=[0.5, 0.5, 0.5]", "model.input_std=[0.25, 0.25, 0.25]"]).unwrap();
}
