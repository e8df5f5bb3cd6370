//! `asl audit`: K-fold out-of-sample probabilities of a corrupted COCO
//! folder (corruptions known, from bench/corrupt_coco.py), its six outputs
//! checked by format and by NumPy, the ranking scored against the truth
//! and against cleanlab on the same probabilities (bench/audit_quality.py),
//! the relabeled recipe trained from another directory, the contact sheet
//! loaded in a real headless browser; refusals that write nothing; a
//! stopped audit that continues to the same outputs; shards audited shard
//! by shard; VOC folders, CSV lists and Open Images audited and their
//! relabeled recipes trained.

mod common;

use common::python::run_python;
use common::training::{text, Fixture};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn asl() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_asl"));
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    command
}

/// `asl audit --config configs/demo.yaml --data DATA --out OUT --no-progress` and `extra`.
fn audit(data: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut command = asl();
    command.args(["audit", "--config", "configs/demo.yaml", "--no-progress", "--data"]).arg(data).arg("--out").arg(out);
    command.args(extra).output().unwrap()
}

/// Synthetic COCO data (`train` images at 64 px, 12 classes) with its training labels corrupted; the truth CSV.
fn corrupted(dir: &Path, train: usize) -> (PathBuf, PathBuf) {
    let data = dir.join("data");
    let mut made = asl();
    made.args(["synth", "--out"]).arg(&data).args(["--train-images", &train.to_string(), "--val-images", "200"]);
    assert!(made.args(["--classes", "12"]).output().unwrap().status.success());
    let truth = dir.join("truth.csv");
    run_python(&["bench/corrupt_coco.py", data.to_str().unwrap(), "--truth", truth.to_str().unwrap()]);
    (data, truth)
}

/// `asl train --config RECIPE` for 1 epoch, run from `dir` (runs in `dir`/runs), with `extra`.
fn train_from(dir: &Path, recipe: &Path, extra: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_asl"));
    command.current_dir(dir).args(["train", "--no-progress", "--config"]).arg(recipe);
    command.args(["--set", "train.epochs=1", "--runs"]).arg(dir.join("runs")).args(extra).output().unwrap()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(String::from).collect()
}

#[test]
fn an_audit_of_a_corrupted_coco_folder_writes_its_outputs_and_finds_the_corruptions() {
    let dir = tempfile::tempdir().unwrap();
    let (data, truth) = corrupted(dir.path(), 800);
    let out = dir.path().join("audit");
    let sets = ["--set", "seed=0", "--set", "train.epochs=8", "--set", "schedule.scheduled_epochs=8"];
    let output = audit(&data, &out, &[&["--folds", "4", "--max-suspects", "100000"][..], &sets].concat());
    assert!(output.status.success(), "{}", text(&output));
    for file in asl::audit::OUTPUTS.iter().chain(&["image_suspicion.csv", "relabeled_labels.csv", "audit.json"]) {
        assert!(out.join(file).is_file(), "no {file} in {}", out.display());
    }
    let (images, classes) = (lines(&out.join("images.txt")), lines(&out.join("classes.txt")));
    assert_eq!((images.len(), classes.len()), (800, 12));
    assert!(images.iter().all(|i| i.starts_with('/')), "named by absolute paths, as relabeled.yaml reads them");
    // NumPy reads the probabilities as a float32 array of that shape, each in [0, 1].
    let npy = out.join("probabilities.npy");
    let shape = run_python(&[
        "-c",
        &format!(
            "import numpy as np; p = np.load('{}'); assert p.dtype == np.float32 and 0 <= p.min() and p.max() <= 1; \
             print(p.shape)",
            npy.display()
        ),
    ]);
    assert_eq!(shape.trim(), "(800, 12)");

    let mut reader = csv::Reader::from_path(out.join("suspects.csv")).unwrap();
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        ["image", "class", "label", "probability", "score", "kind"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert!(!rows.is_empty() && rows.len() <= 100_000);
    let score = |r: &csv::StringRecord| r[4].parse::<f64>().unwrap();
    assert!(rows.windows(2).all(|w| score(&w[0]) >= score(&w[1])), "most suspect first");
    for row in &rows {
        assert!(images.contains(&row[0].to_string()) && classes.contains(&row[1].to_string()), "{row:?}");
        match (&row[2], &row[5]) {
            ("1", "wrong") | ("0", "missing") | ("unknown", "missing") => {}
            other => panic!("a label observed {} cannot be {}: {row:?}", other.0, other.1),
        }
    }

    // Scored against the known corruptions, on the same probabilities.
    let json = dir.path().join("quality.json");
    let noisy = data.join("annotations/instances_train.json");
    let printed = run_python(&[
        "bench/audit_quality.py",
        out.to_str().unwrap(),
        noisy.to_str().unwrap(),
        truth.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    println!("{printed}");
    let quality: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let value = |method: &str, what: &str| quality[method][what].as_f64().unwrap();
    assert!(value("audit", "wrong_ap") > value("raw probability", "wrong_ap"), "{printed}");
    assert!(value("audit", "image_ap") >= value("cleanlab", "image_ap"), "{printed}");
    // Missing labels: about 2% of the negatives; the ranking finds them far above that rate.
    assert!(value("audit", "missing_ap") > 0.1, "{printed}");

    // The relabeled recipe runs as it is, from any directory.
    let elsewhere = tempfile::tempdir().unwrap();
    let relabeled = out.join("relabeled.yaml");
    let yaml = std::fs::read_to_string(&relabeled).unwrap();
    assert!(yaml.contains(&format!("label_overrides: {}", out.join("relabeled_labels.csv").display())), "{yaml}");
    let trained = train_from(elsewhere.path(), &relabeled, &[]);
    assert!(trained.status.success(), "{}", text(&trained));
    let corrections = lines(&out.join("relabeled_labels.csv")).len() - 1;
    assert!(corrections > 0, "the relabeled recipe corrects something");
    assert!(
        !text(&trained).contains("are not in the training split"),
        "every correction found its image: {}",
        text(&trained)
    );

    check_offline_page(&out.join("report.html"), "audit_report");
}

/// An offline page: nothing in it points elsewhere, and (where Chromium is installed, as `.ci/run` makes
/// sure) a real headless browser loads it with no console error, no request and every image whole. The
/// screenshot goes to target/reports/<name>.png.
pub fn check_offline_page(page: &Path, name: &str) {
    let html = std::fs::read_to_string(page).unwrap();
    let outside = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "").replace("http://www.w3.org/1999/xlink", "");
    assert!(!outside.contains("http://") && !outside.contains("https://") && !outside.contains("<script"), "{page:?}");
    assert!(html.contains("data:image/jpeg;base64,"), "the thumbnails are embedded");
    if !cfg!(asl_chromium) {
        // `.ci/run` installs Chromium, so in CI its absence is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but /usr/bin/chromium is missing: the browser check cannot run"
        );
        println!("SKIPPED the browser check: no /usr/bin/chromium");
        return;
    }
    let screenshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/reports");
    std::fs::create_dir_all(&screenshots).unwrap();
    let shot = screenshots.join(format!("{name}.png"));
    let report = run_python(&["tests/support/check_page.py", page.to_str().unwrap(), shot.to_str().unwrap()]);
    let seen: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(seen["console_errors"], serde_json::json!([]), "{seen}");
    assert_eq!(seen["requests"], serde_json::json!([]), "{seen}");
    assert!(seen["images"]["loaded"].as_u64().unwrap() > 0 && seen["images"]["broken"] == 0, "{seen}");
    assert!(shot.is_file());
}

#[test]
fn audits_refuse_what_they_cannot_do_and_write_nothing() {
    let f = Fixture::new();
    let data = f.dir.path().join("data");
    let out = f.dir.path().join("out");
    let model = format!("model.path={}", f.model.display());
    let small = ["--set", "data.image_size=32", "--set", "train.epochs=1", "--set", &model];
    let refused = |output: Output, why: &str| {
        let message = text(&output);
        assert!(!output.status.success() && message.contains(why), "expected {why:?}: {message}");
    };
    refused(
        audit(&data, &out, &[&["--folds", "1"][..], &small].concat()),
        "--folds 1: an audit needs at least 2 folds",
    );
    refused(audit(&data, &out, &[&["--folds", "50"][..], &small].concat()), "holds 96 images, fewer than 2 × 50 folds");
    assert!(!out.exists(), "a refused audit writes nothing");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    refused(audit(&data, &out, &[&["--folds", "2"][..], &small].concat()), "is not empty and holds no audit");
    std::fs::remove_file(out.join("notes.txt")).unwrap();
    // A list whose images have no label at all.
    let list = f.dir.path().join("unlabelled.csv");
    std::fs::write(&list, (0..8).fold("path,labels\n".to_string(), |s, i| s + &format!("data/train/{i:06}.png,\n")))
        .unwrap();
    let val = f.dir.path().join("val.csv");
    std::fs::write(&val, "path,labels\ndata/val/000000.png,\n").unwrap();
    let lists = ["--set", "data.source=list", "--set"];
    let val_set = format!("data.val_path={}", val.display());
    refused(
        audit(&list, &out, &[&lists[..], &[val_set.as_str(), "--folds", "2"], &small].concat()),
        "has no positive label",
    );
    // One audit, then another one into its directory.
    let first = audit(&data, &out, &[&["--folds", "2"][..], &small].concat());
    assert!(first.status.success(), "{}", text(&first));
    let other = audit(&data, &out, &[&["--folds", "2", "--set", "loss.gamma_neg=2"][..], &small].concat());
    refused(other, "holds another audit (its config differs at loss.gamma_neg (4.0 there, 2.0 here))");
}

#[test]
fn a_stopped_audit_continues_to_the_same_outputs() {
    let f = Fixture::with_images(160, 32);
    let data = f.dir.path().join("data");
    let model = format!("model.path={}", f.model.display());
    let sets = [
        "--folds",
        "2",
        "--set",
        "data.image_size=32",
        "--set",
        "data.batch_size=16",
        "--set",
        "train.epochs=2",
        "--set",
        &model,
    ];
    let whole = f.dir.path().join("whole");
    assert!(audit(&data, &whole, &sets).status.success());
    // SIGTERM at the third step of the first fold (5 steps an epoch): stopped with its checkpoint, status 75.
    let stopped_dir = f.dir.path().join("stopped");
    let mut command = asl();
    command.args(["audit", "--config", "configs/demo.yaml", "--no-progress", "--data"]).arg(&data);
    command.arg("--out").arg(&stopped_dir).args(sets).env("ASL_FAULT", "SIGTERM@step=+3");
    let stopped = command.output().unwrap();
    assert_eq!(stopped.status.code(), Some(75), "{}", text(&stopped));
    assert!(text(&stopped).contains("stopped on request in fold 1"), "{}", text(&stopped));
    let resumed = audit(&data, &stopped_dir, &[&sets[..], &["--resume"]].concat());
    assert!(resumed.status.success(), "{}", text(&resumed));
    for file in ["probabilities.npy", "suspects.csv", "images.txt"] {
        assert_eq!(std::fs::read(whole.join(file)).unwrap(), std::fs::read(stopped_dir.join(file)).unwrap(), "{file}");
    }
}

#[test]
fn shards_are_audited_shard_by_shard() {
    let f = Fixture::with_images(96, 16);
    let (images, shards) = (f.dir.path().join("data"), f.dir.path().join("shards"));
    let packed = asl()
        .args(["pack", "--data", images.to_str().unwrap(), "--out", shards.to_str().unwrap(), "--shard-mb", "0.01"])
        .output()
        .unwrap();
    assert!(packed.status.success(), "{}", text(&packed));
    let out = f.dir.path().join("out");
    let model = format!("model.path={}", f.model.display());
    let sets =
        ["--folds", "2", "--set", "data.source=shards", "--set", "data.image_size=32", "--set", "train.epochs=1"];
    let output = audit(&shards, &out, &[&sets[..], &["--set", &model]].concat());
    assert!(output.status.success(), "{}", text(&output));
    let names = lines(&out.join("images.txt"));
    assert_eq!(names.len(), 96, "every sample once, from the held-out shards of its fold");
    assert!(names.iter().all(|n| n.contains(".tar/")), "named <shard>/<key>: {names:?}");
}

#[test]
fn validate_report_of_a_checkpoint_is_an_offline_page_of_where_the_model_fails() {
    let f = Fixture::new();
    let trained = f.run("reported", &["--set", "train.epochs=3", "--set", "schedule.scheduled_epochs=3"]);
    assert!(trained.status.success(), "{}", text(&trained));
    let page = f.dir.path().join("validation.html");
    let checkpoint = f.runs().join("reported/checkpoints/last");
    let output = asl()
        .args(["validate", "--device", "cpu", "--model"])
        .arg(&checkpoint)
        .arg("--data")
        .arg(f.dir.path().join("data"))
        .arg("--report")
        .arg(&page)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let html = std::fs::read_to_string(&page).unwrap();
    for section in [
        "Average precision per class, best first",
        "PR curves: the worst classes",
        "PR curves: the best classes",
        "Per-class thresholds",
        "Worst false positives",
        "Worst false negatives",
        "Δp and γ− by epoch",
    ] {
        assert!(html.contains(section), "no {section:?} in the page");
    }
    check_offline_page(&page, "validation_report");
}

/// Each image of a split: its path and its classes' names.
type LabelledImages = Vec<(PathBuf, Vec<String>)>;

/// The synthetic COCO training and validation splits of `root`, by split name.
fn coco_labels(root: &Path) -> [(String, LabelledImages); 2] {
    use asl::data::sources::{CocoOptions, CocoSplit};
    ["train", "val"].map(|split| {
        let dataset = CocoSplit::find(root, split).unwrap().load(&CocoOptions::default()).unwrap();
        let images = (0..dataset.len())
            .map(|i| {
                let sample = dataset.sample(i);
                (sample.path, sample.positives.iter().map(|&c| dataset.class_names[c as usize].clone()).collect())
            })
            .collect();
        (split.to_string(), images)
    })
}

/// The synthetic images of `coco` in the `VOCdevkit/VOC2007` layout, synthetic class k named as VOC's k-th
/// class: JPEGImages/<id>.jpg, Annotations/<id>.xml, ImageSets/Main/{train,val}.txt.
fn write_voc(coco: &Path, root: &Path) {
    use asl::data::sources::VOC_CLASSES;
    let names = asl::data::sources::synthetic_class_names(12);
    for dir in ["JPEGImages", "Annotations", "ImageSets/Main"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for (split, images) in coco_labels(coco) {
        let mut ids = String::new();
        for (path, labels) in images {
            let id = path.file_stem().unwrap().to_str().unwrap().to_string();
            std::fs::copy(&path, root.join(format!("JPEGImages/{id}.jpg"))).unwrap();
            let objects: String = labels
                .iter()
                .map(|l| VOC_CLASSES[names.iter().position(|n| n == l).unwrap()])
                .map(|name| format!("<object><name>{name}</name><difficult>0</difficult></object>"))
                .collect();
            std::fs::write(root.join(format!("Annotations/{id}.xml")), format!("<annotation>{objects}</annotation>"))
                .unwrap();
            ids += &format!("{id}\n");
        }
        std::fs::write(root.join(format!("ImageSets/Main/{split}.txt")), ids).unwrap();
    }
}

/// The synthetic images of `coco` as `path,labels` lists beside them, labels separated by `;` (the class
/// names hold spaces): (train list, val list).
fn write_lists(coco: &Path) -> (PathBuf, PathBuf) {
    let [train, val] = coco_labels(coco).map(|(split, images)| {
        let list = coco.join(format!("{split}.csv"));
        let mut writer = csv::Writer::from_path(&list).unwrap();
        writer.write_record(["path", "labels"]).unwrap();
        for (path, labels) in images {
            let relative = path.strip_prefix(coco).unwrap().to_str().unwrap().to_string();
            writer.write_record([relative, labels.join(";")]).unwrap();
        }
        writer.flush().unwrap();
        list
    });
    (train, val)
}

/// `asl synth` into `out` with `extra` (32 px, 64 training images, 12 classes).
fn synth(out: &Path, extra: &[&str]) {
    let mut made = asl();
    made.args(["synth", "--out"]).arg(out).args(["--train-images", "64", "--val-images", "24", "--classes", "12"]);
    let made = made.args(["--image-size", "32"]).args(extra).output().unwrap();
    assert!(made.status.success(), "{}", text(&made));
}

#[test]
fn voc_folders_lists_and_open_images_are_audited_and_their_relabeled_recipes_train() {
    let dir = tempfile::tempdir().unwrap();
    let coco = dir.path().join("coco");
    synth(&coco, &["--format", "jpeg"]);
    let voc = dir.path().join("VOC2007");
    write_voc(&coco, &voc);
    let (train_list, val_list) = write_lists(&coco);
    let openimages = dir.path().join("openimages");
    synth(&openimages, &["--layout", "openimages"]);
    let val_path = format!("data.val_path={}", val_list.display());
    let sources: [(&str, &Path, Vec<&str>, usize); 3] = [
        ("voc", &voc, vec!["--set", "data.source=voc"], 20),
        (
            "list",
            &train_list,
            vec!["--set", "data.source=list", "--set", "data.label_separator=;", "--set", &val_path],
            12,
        ),
        ("openimages", &openimages, vec!["--set", "data.source=openimages"], 12),
    ];
    let small =
        ["--folds", "2", "--set", "data.image_size=32", "--set", "data.batch_size=16", "--set", "train.epochs=1"];
    for (source, data, sets, classes) in sources {
        let out = dir.path().join(format!("audit-{source}"));
        let output = audit(data, &out, &[&small[..], &sets].concat());
        assert!(output.status.success(), "{source}: {}", text(&output));
        for file in asl::audit::OUTPUTS {
            assert!(out.join(file).is_file(), "{source}: no {file} in {}", out.display());
        }
        let images = lines(&out.join("images.txt"));
        assert_eq!(lines(&out.join("classes.txt")).len(), classes, "{source}");
        assert!(images.len() >= 60, "{source}: {} images out of sample", images.len());
        let suspects: Vec<csv::StringRecord> =
            csv::Reader::from_path(out.join("suspects.csv")).unwrap().records().map(Result::unwrap).collect();
        assert!(!suspects.is_empty(), "{source}: no suspects");
        assert!(suspects.iter().all(|s| images.contains(&s[0].to_string())), "{source}: a suspect names no image");
        if source == "openimages" {
            assert!(suspects.iter().any(|s| &s[2] == "unknown"), "{source}: unverified labels are audited too");
            assert!(suspects.iter().all(|s| &s[2] != "unknown" || &s[5] == "missing"), "{source}");
        }

        // The relabeled recipe as it is, and the same recipe correcting the 20 most suspect labels: every
        // correction finds its image, by the name the audit gave it.
        let relabeled = out.join("relabeled.yaml");
        let edited = out.join("edited_labels.csv");
        let mut writer = csv::Writer::from_path(&edited).unwrap();
        writer.write_record(["image", "class", "label"]).unwrap();
        for s in suspects.iter().take(20) {
            writer.write_record([&s[0], &s[1], "unknown"]).unwrap();
        }
        writer.flush().unwrap();
        let edited_set = format!("data.label_overrides={}", edited.display());
        for extra in [vec![], vec!["--set", edited_set.as_str()]] {
            let elsewhere = tempfile::tempdir().unwrap();
            let trained = train_from(elsewhere.path(), &relabeled, &extra);
            assert!(trained.status.success(), "{source}: {}", text(&trained));
            assert!(!text(&trained).contains("are not in the training split"), "{source}: {}", text(&trained));
        }
    }
}
