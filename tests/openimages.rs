//! Open Images at full scale, on small folders: the native files (V6 and V7
//! names, real column order, quoted fields, labels outside the trainable
//! list, bad values, missing images), three-state labels through every
//! source, sparse validation against scikit-learn and across ranks, the
//! loss weights of unknown labels by hand, and a change of input size.

mod common;

use asl::data::sources::{
    load_coco, load_list, synthetic_mid, write_synthetic_openimages, CocoOptions, CrowdPolicy, ListOptions,
    OpenImagesOptions, OpenImagesSplit, SynthConfig, SYNTH_OPENIMAGES_MISSING,
};
use asl::data::{Dataset, LabelState, Sample, Unlisted};
use asl::loss::{AsymmetricLoss, PartialLabels};
use asl::metrics::{MetricsReport, ScoredLabels, TOP_K};
use common::distributed::run_ranks;
use common::python::run_python;
use common::training::{state, text, validate_report, Fixture};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tch::{Kind, Tensor};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A V6-named folder: 3 trainable classes, a description with a quoted comma, 3 listed images of which
/// one is missing, a row of an untrainable class, and the columns in Google's order.
fn v6_folder(dir: &Path) {
    write(&dir.join("oidv6-classes-trainable.txt"), "/m/0a\n/m/0b\n/m/0c\n");
    write(
        &dir.join("oidv6-class-descriptions.csv"),
        "LabelName,DisplayName\n/m/0a,Cat\n\"/m/0b\",\"Dog, domestic\"\n/m/0c,Cat\n/m/0z,Sky\n",
    );
    write(
        &dir.join("oidv6-train-annotations-human-imagelabels.csv"),
        "ImageID,Source,LabelName,Confidence\n\
         000000000000000a,verification,/m/0a,1\n\
         000000000000000a,verification,/m/0c,0\n\
         \"000000000000000b\",\"crowdsource-verification\",\"/m/0b\",\"1\"\n\
         000000000000000b,verification,/m/0z,1\n\
         000000000000000c,verification,/m/0c,1\n",
    );
    for id in ["000000000000000a", "000000000000000b"] {
        write(&dir.join(format!("train/{id}.jpg")), "");
    }
}

#[test]
fn v6_files_parse_with_verified_negatives_untrainable_rows_and_a_missing_image() {
    let dir = tempfile::tempdir().unwrap();
    v6_folder(dir.path());
    let split = OpenImagesSplit::find(dir.path(), "train").unwrap();
    assert!(split.human.ends_with("oidv6-train-annotations-human-imagelabels.csv"));
    let (dataset, counts) = split.load(&OpenImagesOptions::default()).unwrap();
    // Two classes share "Cat": each keeps its MID; the quoted comma stays in its name.
    assert_eq!(dataset.class_names, ["Cat (/m/0a)", "Dog, domestic", "Cat (/m/0c)"]);
    assert_eq!(dataset.unlisted, Unlisted::Unknown);
    assert_eq!(dataset.len(), 2, "the missing image is left out");
    let first = dataset.sample(0);
    assert!(first.path.ends_with("train/000000000000000a.jpg"));
    assert_eq!((first.positives, first.negatives, first.unknown), (vec![0], vec![2], vec![]));
    assert_eq!(dataset.sample(1).positives, [1]);
    let mut row = [9.0; 3];
    dataset.write_targets(0, &mut row);
    assert_eq!(row, [1.0, -1.0, 0.0], "unlisted: unknown");
    assert_eq!((counts.untrainable_rows, counts.missing_images), (1, 1));
    assert_eq!(counts.first_missing, ["000000000000000c"]);
    let notes = counts.notes("train").join("\n");
    assert!(notes.contains("1 label rows of classes outside the trainable list dropped"), "{notes}");
    assert!(notes.contains("1 listed images are missing and left out (first: 000000000000000c)"), "{notes}");
    let strict = split.load(&OpenImagesOptions { strict: true, ..Default::default() }).unwrap_err().to_string();
    assert!(strict.contains("1 images listed in") && strict.contains("000000000000000c"), "{strict}");
}

#[test]
fn v7_names_machine_labels_and_bad_rows_named_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(&root.join("oidv7-classes-trainable.txt"), "/m/0a\n/m/0b\n");
    let human = "ImageID,Source,LabelName,Confidence\n000000000000000a,verification,/m/0a,0\n";
    write(&root.join("oidv7-val-annotations-human-imagelabels.csv"), human);
    // Machine labels: /m/0a is a verified negative already (the human wins), /m/0b joins as a positive,
    // and a row under the threshold stays out.
    write(
        &root.join("oidv7-val-annotations-machine-imagelabels.csv"),
        "ImageID,Source,LabelName,Confidence\n000000000000000a,machine,/m/0a,0.9\n000000000000000a,machine,/m/0b,0.7\n000000000000000d,machine,/m/0a,0.2\n",
    );
    write(&root.join("validation/000000000000000a.jpg"), "");
    let split = OpenImagesSplit::find(root, "val").unwrap();
    assert_eq!(split.split, "validation");
    let human_only = split.load(&OpenImagesOptions::default()).unwrap().0;
    assert_eq!((human_only.sample(0).positives, human_only.sample(0).negatives), (vec![], vec![0]));
    let options = OpenImagesOptions { machine_threshold: Some(0.5), ..Default::default() };
    let (with_machine, counts) = split.load(&options).unwrap();
    assert_eq!((with_machine.sample(0).positives, with_machine.sample(0).negatives), (vec![1], vec![0]));
    assert_eq!((with_machine.len(), counts.machine_rows_below), (1, 1));

    let bad_confidence = "ImageID,Source,LabelName,Confidence\n000000000000000a,verification,/m/0a,1\n000000000000000a,verification,/m/0b,yes\n";
    write(&root.join("oidv7-val-annotations-human-imagelabels.csv"), bad_confidence);
    let err = split.load(&OpenImagesOptions::default()).unwrap_err().to_string();
    assert!(err.contains("oidv7-val-annotations-human-imagelabels.csv:3:"), "{err}");
    assert!(err.contains("Confidence `yes` is not a number between 0 and 1"), "{err}");
    write(
        &root.join("oidv7-val-annotations-human-imagelabels.csv"),
        "ImageID,Source,LabelName,Confidence\nnot-an-id,v,/m/0a,1\n",
    );
    let err = split.load(&OpenImagesOptions::default()).unwrap_err().to_string();
    assert!(err.contains(":2: ImageID `not-an-id` is not 16 hexadecimal digits"), "{err}");
    write(&root.join("oidv7-val-annotations-human-imagelabels.csv"), "ImageID,LabelName\n");
    let err = split.load(&OpenImagesOptions::default()).unwrap_err().to_string();
    assert!(err.contains("the header must name ImageID, LabelName and Confidence"), "{err}");
    let err = OpenImagesSplit::find(root, "train").unwrap_err().to_string();
    assert!(err.contains("train human-verified labels"), "{err}");
}

#[test]
fn three_state_labels_round_trip_through_every_source() {
    let dir = tempfile::tempdir().unwrap();
    // Lists: positives, verified negatives, unknowns, and a rule for the rest.
    let list = dir.path().join("list.csv");
    write(&list, "path,labels,negatives,unknown\na.jpg,cat,dog,sky\nb.jpg,,cat sky,\n");
    for unlisted in [Unlisted::Negative, Unlisted::Unknown] {
        let dataset = load_list(&list, &ListOptions { unlisted, ..Default::default() }).unwrap();
        assert_eq!(dataset.class_names, ["cat", "dog", "sky"]);
        let expected = [
            Sample { path: dir.path().join("a.jpg"), positives: vec![0], negatives: vec![1], unknown: vec![2] },
            Sample { path: dir.path().join("b.jpg"), positives: vec![], negatives: vec![0, 2], unknown: vec![] },
        ];
        assert_eq!([dataset.sample(0), dataset.sample(1)], expected);
        let mut row = [9.0; 3];
        dataset.write_targets(1, &mut row);
        let dog = if unlisted == Unlisted::Negative { 0.0 } else { -1.0 };
        assert_eq!(row, [0.0, dog, 0.0], "{unlisted:?}");
    }
    // COCO: crowd-only classes unknown, the rest negative.
    let coco = dir.path().join("instances.json");
    write(
        &coco,
        r#"{"images": [{"id": 1, "file_name": "c.jpg"}], "annotations": [{"image_id": 1, "category_id": 2, "iscrowd": 1}, {"image_id": 1, "category_id": 1, "iscrowd": 0}], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]}"#,
    );
    let dataset =
        load_coco(&coco, dir.path(), &CocoOptions { crowd: CrowdPolicy::Unknown, ..Default::default() }).unwrap();
    assert_eq!(
        dataset.sample(0),
        Sample { path: dir.path().join("c.jpg"), positives: vec![0], negatives: vec![], unknown: vec![1] }
    );
    assert!(dataset.has_unknown_labels());
    // Open Images: what the files say, verbatim.
    let oi = dir.path().join("oi");
    write_synthetic_openimages(
        &oi,
        &SynthConfig { train_images: 20, val_images: 10, classes: 6, ..Default::default() },
    )
    .unwrap();
    let (dataset, counts) = OpenImagesSplit::find(&oi, "train").unwrap().load(&OpenImagesOptions::default()).unwrap();
    assert_eq!(counts.missing_images, SYNTH_OPENIMAGES_MISSING);
    let csv = std::fs::read_to_string(oi.join("oidv7-train-annotations-human-imagelabels.csv")).unwrap();
    for i in 0..dataset.len() {
        let sample = dataset.sample(i);
        let id = sample.path.file_stem().unwrap().to_str().unwrap().to_string();
        for (state, classes) in [(1, &sample.positives), (0, &sample.negatives)] {
            for &c in classes {
                assert!(csv.contains(&format!("{id},verification,{},{state}", synthetic_mid(c as usize))), "{id} {c}");
            }
        }
        let listed = csv.lines().filter(|l| l.starts_with(&id) && !l.contains("untrainable")).count();
        assert_eq!(listed, sample.positives.len() + sample.negatives.len(), "{id}");
    }
    // A dataset built by hand comes back as it went in.
    let samples = vec![Sample { path: "x.jpg".into(), positives: vec![3], negatives: vec![1], unknown: vec![0] }];
    let built = Dataset::from_samples(vec!["0".into(), "1".into(), "2".into(), "3".into()], samples.clone());
    assert_eq!(built.sample(0), samples[0]);
    assert_eq!(
        built.labels().listed(0).collect::<Vec<_>>(),
        [(3, LabelState::Positive), (1, LabelState::Negative), (0, LabelState::Unknown)]
    );
}

/// Random probabilities for 60 images × 7 classes with Open Images' label states (a few verified per
/// image, ties included); asl's report against scikit-learn's average_precision_score over the verified
/// labels, then over every label when all are verified.
#[test]
fn sparse_map_matches_scikit_learn_over_verified_labels_and_the_dense_case() {
    let (images, classes) = (60usize, 7usize);
    let uniform = common::uniform(images * classes, 0.0, 1.0, 11);
    let states = common::uniform(images * classes, 0.0, 1.0, 12);
    // Scores rounded to 2 decimals: ties within a class.
    let scores: Vec<f32> = uniform.iter().map(|u| ((u * 100.0).round() / 100.0) as f32).collect();
    let partial: Vec<f32> = states
        .iter()
        .zip(&uniform)
        .map(|(s, u)| {
            if *s < 0.6 {
                -1.0
            } else if *u > 0.55 {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    let full: Vec<f32> = partial
        .iter()
        .zip(&uniform)
        .map(|(t, u)| {
            if *t >= 0.0 {
                *t
            } else if *u > 0.7 {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    for (name, targets) in [("partial", &partial), ("full", &full)] {
        let mut scored = ScoredLabels::new(classes, TOP_K);
        for row in 0..images {
            let span = row * classes..(row + 1) * classes;
            scored.push_row(row as u32, &scores[span.clone()], &targets[span]).unwrap();
        }
        let report = MetricsReport::compute(&scored, 0.5).unwrap();
        let input = dir.path().join(format!("{name}.json"));
        let json = serde_json::json!({"classes": classes, "scores": scores, "targets": targets});
        std::fs::write(&input, json.to_string()).unwrap();
        let out = run_python(&["tests/support/sparse_map_check.py", input.to_str().unwrap()]);
        let theirs: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        for (class, ours) in report.average_precision.per_class.iter().enumerate() {
            let expected = theirs["per_class"][class].as_f64();
            match (ours, expected) {
                (Some(a), Some(b)) => assert!((a - 100.0 * b).abs() < 1e-9, "{name} class {class}: {a} vs {b}"),
                (a, b) => assert_eq!(a.is_some(), b.is_some(), "{name} class {class}"),
            }
        }
        let map = report.map().unwrap();
        assert!((map - 100.0 * theirs["map"].as_f64().unwrap()).abs() < 1e-9, "{name}: {map} vs {theirs}");
        if name == "partial" {
            assert!(scored.labels().len() < images * classes, "only the verified labels are kept");
        }
    }
}

/// The demo recipe on the synthetic Open Images folder, with `extra` overrides.
fn oi_sets(data: &Path, name: &str, extra: &[&str]) -> Vec<String> {
    let mut sets = vec![
        format!("name={name}"),
        format!("data.path={}", data.display()),
        "data.source=openimages".into(),
        "data.image_size=32".into(),
        "data.batch_size=16".into(),
        "data.val_batch_size=16".into(),
        "device=cpu".into(),
        "loss.unknown_weight=0.5".into(),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    sets
}

fn asl_train(runs: &Path, sets: &[String]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_asl"));
    command.current_dir(env!("CARGO_MANIFEST_DIR")).args([
        "train",
        "--config",
        "configs/demo.yaml",
        "--no-progress",
        "--runs",
    ]);
    command.arg(runs);
    for set in sets {
        command.args(["--set", set]);
    }
    command
}

#[test]
fn two_ranks_gather_sparse_validation_equal_to_one_rank_and_the_run_moves_to_a_larger_size() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("oi");
    write_synthetic_openimages(
        &data,
        &SynthConfig { train_images: 96, val_images: 40, classes: 12, ..Default::default() },
    )
    .unwrap();
    let runs = dir.path().join("runs");
    let sets = oi_sets(&data, "two", &["train.epochs=1", "schedule.scheduled_epochs=2"]);
    let outputs = run_ranks(2, Duration::from_secs(240), |_| asl_train(&runs, &sets));
    for (rank, output) in outputs.iter().enumerate() {
        assert!(output.status.success(), "rank {rank}: {}", text(output));
    }
    assert!(
        text(&outputs[0]).contains("label rows of classes outside the trainable list dropped"),
        "{}",
        text(&outputs[0])
    );
    let run = runs.join("two");
    let gathered = state(&run).history[0].map.unwrap();
    // One process scores the same checkpoint over the whole validation split, its data read as the run read
    // it (no --source: the checkpoint's config says openimages).
    let json = validate_report(&run.join("checkpoints/last"), &data, &["--batch-size", "8"]);
    let origins = json["data"].as_str().unwrap();
    assert!(origins.starts_with("data: source openimages (the checkpoint's "), "{origins}");
    let alone = json["average_precision"]["map"].as_f64().unwrap();
    assert!((alone - gathered).abs() < 1e-6, "2 ranks {gathered} vs 1 rank {alone}");
    let labels: usize = json["scores"].as_array().unwrap().iter().map(|i| i["labels"].as_array().unwrap().len()).sum();
    let verified = std::fs::read_to_string(data.join("oidv7-val-annotations-human-imagelabels.csv")).unwrap();
    let expected = verified.lines().skip(1).filter(|l| !l.contains("untrainable")).count();
    assert_eq!(labels, expected, "one score per verified label of the split");

    // The 448 step of the recipe, in small: the first run's model at a new input size.
    let sets = oi_sets(&data, "larger", &["train.epochs=1", "schedule.scheduled_epochs=2", "data.image_size=64"]);
    let model = format!("model.path={}", run.join("checkpoints/best/model.pt").display());
    let larger = asl_train(&runs, &[&sets[..], std::slice::from_ref(&model)].concat()).output().unwrap();
    assert!(larger.status.success(), "{}", text(&larger));
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(runs.join("larger/checkpoints/last/model.json")).unwrap())
            .unwrap();
    assert_eq!(card["input_size"], 64);
}

#[test]
fn a_card_with_a_fixed_input_size_refuses_another_naming_the_key() {
    let f = Fixture::new();
    let card_path = f.model.with_extension("json");
    let mut card: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&card_path).unwrap()).unwrap();
    card["fixed_input_size"] = true.into();
    std::fs::write(&card_path, card.to_string()).unwrap();
    let output = f.run("fixed", &["--set", "data.image_size=64"]);
    let message = text(&output);
    assert!(!output.status.success(), "{message}");
    assert!(message.contains("cannot take 64×64 inputs") && message.contains("set data.image_size to 32"), "{message}");
}

/// `loss.unknown_weight` on a 3-class example, by hand: targets [1, 0, unknown], γ− = 4, γ+ = 0,
/// m = 0.05. With p = σ(z) and p_m = p − m, ∂L/∂z is −(1 − p) for the positive; for a negative it is
/// p(1 − p) · [p_m^γ / (1 − p_m) − γ p_m^(γ−1) log(1 − p_m)] (the paper's Eq. 8), or its first term
/// alone when the focusing weight is detached (the reference's training setting); the unknown label's
/// is that times w.
#[test]
fn unknown_labels_weigh_unknown_weight_and_verified_negatives_fully_by_hand() {
    let (gamma, margin, weight) = (4.0f64, 0.05f64, 0.3f64);
    let z = [0.4f64, 1.2, 0.8];
    let states = Tensor::from_slice(&[1.0f64, 0.0, -1.0]).view([1, 3]);
    let partial = PartialLabels::from_states(&states, weight).unwrap();
    // The weights are f32, as the loss's other operands.
    let weight = f64::from(weight as f32);
    assert_eq!(Vec::<f64>::try_from(partial.weights.to_kind(Kind::Double).view([-1])).unwrap(), [1.0, 1.0, weight]);
    let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
    for detach in [false, true] {
        let logits = Tensor::from_slice(&z).view([1, 3]).set_requires_grad(true);
        let loss = AsymmetricLoss::asl().with_detach_focusing(detach);
        loss.forward_weighted(&logits, &partial.targets, Some(&partial.weights)).unwrap().backward();
        let grad = Vec::<f64>::try_from(logits.grad().view([-1])).unwrap();
        let negative = |v: f64| {
            let p = sigmoid(v);
            let pm = p - margin;
            let through_the_weight = if detach { 0.0 } else { gamma * pm.powf(gamma - 1.0) * (1.0 - pm).ln() };
            p * (1.0 - p) * (pm.powf(gamma) / (1.0 - pm) - through_the_weight)
        };
        let expected = [-(1.0 - sigmoid(z[0])), negative(z[1]), weight * negative(z[2])];
        for (g, e) in grad.iter().zip(expected) {
            assert!((g - e).abs() < 1e-12, "detach {detach}: {grad:?} vs {expected:?}");
        }
    }
}
