//! Config files and overrides: every shipped recipe parses, and bad keys,
//! types and values stop start-up naming the key path.

use asl::loss::LossConfig as LossSection;
use asl::model::{HeadKind, ModelConfig};
use asl::train::OneCycle;
use asl::train::{OptimizerKind, TrainConfig};
use std::path::Path;

mod common;

fn demo_with(overrides: &[&str]) -> Result<TrainConfig, String> {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    TrainConfig::load(Path::new("configs/demo.yaml"), &overrides).map_err(|e| e.to_string())
}

#[test]
fn every_shipped_recipe_parses_and_validates() {
    for entry in std::fs::read_dir("configs").unwrap() {
        let path = entry.unwrap().path();
        let config = TrainConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let yaml = config.to_yaml();
        assert_eq!(TrainConfig::from_yaml(&yaml, "round trip", &[]).unwrap(), config, "{}", path.display());
    }
    let coco = TrainConfig::load(Path::new("configs/coco.yaml"), &[]).unwrap();
    assert_eq!((coco.model.timm.as_str(), coco.data.image_size), ("tresnet_l", 448));
    // The paper starts from MIIL's ImageNet TResNet-L at 448; the demo needs no network.
    assert_eq!(coco.model.weights.as_ref().unwrap().to_string(), "hf-hub:timm/tresnet_l.miil_in1k_448");
    assert_eq!(TrainConfig::load(Path::new("configs/demo.yaml"), &[]).unwrap().model.weights, None);
    assert_eq!((coco.train.epochs, coco.schedule.scheduled_epochs, coco.train.ema_decay), (40, 80, 0.9997));
    let LossSection::Asymmetric(loss) = &coco.loss else { panic!("coco trains the multi-label ASL") };
    assert_eq!((loss.gamma_neg, loss.gamma_pos, loss.clip), (4.0, 0.0, 0.05));
    let adaptive = TrainConfig::load(Path::new("configs/adaptive.yaml"), &[]).unwrap();
    let LossSection::Asymmetric(loss) = &adaptive.loss else { panic!() };
    assert_eq!(loss.adaptive.unwrap().target_delta, 0.1);
    // The published ML-Decoder settings.
    let decoder = TrainConfig::load(Path::new("configs/coco-ml-decoder.yaml"), &[]).unwrap();
    // ML-Decoder's TResNet-L is timm's tresnet_v2_l, from its ImageNet-21k weights.
    assert_eq!(
        (decoder.model.timm.as_str(), decoder.model.head, decoder.data.image_size),
        ("tresnet_v2_l", HeadKind::MlDecoder, 448)
    );
    assert_eq!(decoder.model.weights.unwrap().to_string(), "hf-hub:timm/tresnet_v2_l.miil_in21k");
    assert_eq!((decoder.model.decoder_embedding, decoder.model.num_groups), (768, 100));
    assert_eq!(
        (decoder.schedule.max_lr, decoder.optimizer.weight_decay, decoder.optimizer.kind),
        (1e-4, 1e-4, OptimizerKind::Adam)
    );
    let LossSection::Asymmetric(loss) = &decoder.loss else { panic!() };
    assert_eq!((loss.gamma_neg, loss.gamma_pos, loss.clip), (4.0, 0.0, 0.05));
}

#[test]
fn overrides_set_nested_keys_with_yaml_values() {
    let config =
        demo_with(&["loss.gamma_neg=2.5", "train.epochs=3", "data.augment.randaugment=null", "name=other"]).unwrap();
    let LossSection::Asymmetric(loss) = &config.loss else { panic!() };
    assert_eq!(loss.gamma_neg, 2.5);
    assert_eq!(config.train.epochs, 3);
    assert!(config.data.augment.randaugment.is_none());
    assert_eq!(config.name, "other");
}

#[test]
fn bad_keys_types_and_values_name_the_key() {
    let cases: [(&[&str], &str); 12] = [
        (
            &["model.weights=hf-hub:timm/tresnet_l.miil_in1k_448"],
            "config key `model.weights`: hf-hub:timm/tresnet_l.miil_in1k_448 holds tresnet_l weights but model.timm \
             is test_resnet; set model.timm=tresnet_l, or other weights",
        ),
        (&["model.weights=hf-hub:tresnet_l"], "config key `model.weights`: `hf-hub:tresnet_l` is not a hub reference"),
        (&["loss.gamma_nge=2"], "config key `loss`: unknown field `gamma_nge`"),
        (&["train.epochs=many"], "config key `train.epochs`: invalid type: string \"many\""),
        (&["loss.gamma_neg=-1"], "config key `loss.gamma_neg`: must be >= 0, got -1"),
        (&["loss.clip=1.0"], "config key `loss.clip`: must satisfy 0 <= value < 1, got 1"),
        (&["model.timm=tresnet_m", "data.image_size=100"], "config key `data.image_size`: 100 is not a multiple of 32"),
        (&["train.epochs=30"], "config key `train.epochs`: 30 exceeds schedule.scheduled_epochs = 20"),
        (&["loss.kind=hinge"], "config key `loss.kind`: unknown variant `hinge`"),
        (&["schedule.max_lr=0"], "config key `schedule.max_lr`: must be > 0, got 0"),
        (&["train.epochs"], "--set train.epochs: expected key=value"),
        (
            &["model.input_mean=[0, 0, 0]", "model.input_std=[1, 0, 1]"],
            "config key `model.input_std`: every channel's std must be positive, got [1.0, 0.0, 1.0]",
        ),
    ];
    for (overrides, expected) in cases {
        let err = demo_with(overrides).unwrap_err();
        assert!(err.starts_with(expected), "{overrides:?}: {err}");
    }
    let err = TrainConfig::from_yaml("name: [unclosed", "inline.yaml", &[]).unwrap_err().to_string();
    assert!(err.starts_with("config inline.yaml is not valid YAML"), "{err}");
}

#[test]
fn one_cycle_matches_pytorch() {
    let config = demo_with(&[]).unwrap();
    let schedule = OneCycle::new(config.schedule, 50).unwrap();
    let script = "import torch, json\n\
        p = torch.nn.Parameter(torch.zeros(1))\n\
        opt = torch.optim.Adam([p], lr=1.0)\n\
        s = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=50, pct_start=0.2, div_factor=25, final_div_factor=1e4, base_momentum=0.85, max_momentum=0.95)\n\
        out = []\n\
        for _ in range(50):\n    g = opt.param_groups[0]; out.append([g['lr'], g['betas'][0]]); opt.step(); s.step()\n\
        print(json.dumps(out))";
    let reference: Vec<[f64; 2]> = serde_json::from_str(common::python::run_python(&["-c", script]).trim()).unwrap();
    for (step, [lr, beta1]) in reference.into_iter().enumerate() {
        let ours = schedule.at(step);
        assert!(
            (ours.lr - lr).abs() < 1e-12 && (ours.beta1 - beta1).abs() < 1e-12,
            "step {step}: {ours:?} vs ({lr}, {beta1})"
        );
    }
}

#[test]
fn printed_config_documents_every_key_and_reads_back_the_same() {
    for entry in std::fs::read_dir("configs").unwrap() {
        let path = entry.unwrap().path();
        let config = TrainConfig::load(&path, &[]).unwrap();
        let text = config.to_annotated_yaml();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate().filter(|(_, l)| !l.trim_start().starts_with('#')) {
            let documented = i > 0 && lines[i - 1].trim_start().starts_with("# ");
            assert!(documented, "{}: `{line}` has no documentation above it", path.display());
        }
        assert_eq!(TrainConfig::from_yaml(&text, "printed", &[]).unwrap(), config, "{}", path.display());
    }
}

#[test]
fn recipes_state_only_differences_from_the_paper_defaults() {
    let coco = TrainConfig::load(Path::new("configs/coco.yaml"), &[]).unwrap();
    // The pretrained weights are the recipe's, not a default: a library user's config never reaches the
    // network unasked.
    let weights = Some("hf-hub:timm/tresnet_l.miil_in1k_448".to_string().try_into().unwrap());
    let model = ModelConfig { weights, ..ModelConfig::default() };
    assert_eq!(coco, TrainConfig { name: "coco-tresnet-l".into(), model, ..TrainConfig::default() });
    // A nested key left out keeps its default; a loss of another kind replaces the section.
    let config = demo_with(&["loss={kind: single_label, gamma_neg: 2}"]).unwrap();
    let LossSection::SingleLabel(single) = config.loss else { panic!("{:?}", config.loss) };
    assert_eq!((single.gamma_neg, single.label_smoothing), (2.0, 0.1));
    let config = demo_with(&["loss.adaptive={lambda: 0.2}"]).unwrap();
    let LossSection::Asymmetric(loss) = config.loss else { panic!() };
    assert_eq!((loss.adaptive.unwrap().lambda, loss.adaptive.unwrap().target_delta, loss.clip), (0.2, 0.1, 0.05));
}
