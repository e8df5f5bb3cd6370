//! `asl validate` and `asl infer` against PyTorch on the real COCO slice:
//! the same model's outputs, computed by `torch.jit.load` in Python, give
//! the same mAP (to 1e-6, recomputed in numpy; and equal to the reference's
//! own numpy AP when no scores tie) and the same probabilities (to 1e-5).

mod common;

use common::coco_mini::coco_mini;
use common::python::{export_model, run_python};
use std::process::Command;

const SIZE: usize = 64;

fn asl(args: &[&str]) -> std::process::Output {
    let output = Command::new(env!("CARGO_BIN_EXE_asl")).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "asl {args:?}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
#[cfg_attr(
    not(asl_coco_mini),
    ignore = "needs ../shared/data/coco-mini, the real COCO slice; absent when this was built"
)]
fn validate_map_matches_numpy_over_pytorch_outputs() {
    let root = coco_mini();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.pt");
    export_model("test_resnet", 80, SIZE, &model);
    let (json, inputs) = (dir.path().join("report.json"), dir.path().join("inputs.u8"));
    let output = asl(&[
        "validate",
        "--model",
        model.to_str().unwrap(),
        "--data",
        root.to_str().unwrap(),
        "--device",
        "cpu",
        "--batch-size",
        "16",
        "--json",
        json.to_str().unwrap(),
        "--save-inputs",
        inputs.to_str().unwrap(),
        "--tune-thresholds",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("mAP ") && stdout.contains("over 80 images, 80 classes"), "{stdout}");
    assert!(stdout.contains("top-3  CP"), "{stdout}");
    assert!(stdout.contains("\nperson "), "the per-class AP table names the classes: {stdout}");
    let ours: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let our_map = ours["average_precision"]["map"].as_f64().unwrap();

    let annotations = root.join("annotations/instances_val2017.json");
    let python = run_python(&[
        "tests/support/map_roundtrip.py",
        model.to_str().unwrap(),
        inputs.to_str().unwrap(),
        &SIZE.to_string(),
        annotations.to_str().unwrap(),
    ]);
    let theirs: serde_json::Value = serde_json::from_str(python.trim()).unwrap();
    let their_map = theirs["map"].as_f64().unwrap();
    assert!((our_map - their_map).abs() < 1e-6, "mAP: asl {our_map} vs numpy {their_map}");
    // Without tied scores the reference's own numpy AP must agree too.
    if theirs["tied_classes"].as_u64() == Some(0) {
        let reference = theirs["reference_map"].as_f64().unwrap();
        assert!((our_map - reference).abs() < 1e-6, "mAP: asl {our_map} vs reference {reference}");
    }
    // COCO verifies every label: the report holds each image's 80 probabilities.
    let mut ours_p = vec![f64::NAN; 80 * 80];
    for image in ours["scores"].as_array().unwrap() {
        let row = image["image"].as_u64().unwrap() as usize;
        for pair in image["labels"].as_array().unwrap() {
            ours_p[row * 80 + pair[0].as_u64().unwrap() as usize] = pair[1].as_f64().unwrap();
        }
    }
    assert!(ours_p.iter().all(|p| p.is_finite()), "an image's label is missing from the report");
    let theirs_p = theirs["probabilities"].as_array().unwrap();
    assert_eq!(theirs_p.len(), 80 * 80);
    let diff = ours_p.iter().zip(theirs_p).map(|(a, b)| (a - b.as_f64().unwrap()).abs()).fold(0.0, f64::max);
    assert!(diff < 1e-5, "probabilities differ by {diff}");
    assert!(model.with_extension("thresholds.json").is_file(), "--tune-thresholds saves beside the model");
}

#[test]
#[cfg_attr(
    not(asl_coco_mini),
    ignore = "needs ../shared/data/coco-mini, the real COCO slice; absent when this was built"
)]
fn infer_probabilities_match_pytorch_on_five_real_images() {
    let root = coco_mini();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.pt");
    export_model("test_resnet", 80, SIZE, &model);
    // Five real COCO photos, stored losslessly at the model's size so both sides read identical pixels.
    let images = dir.path().join("images");
    let script = format!(
        "import os, glob\nfrom PIL import Image\nos.makedirs('{out}')\n\
         for p in sorted(glob.glob('{root}/val2017/*.jpg'))[:5]:\n\
         \x20   Image.open(p).convert('RGB').resize(({s}, {s})).save(os.path.join('{out}', os.path.basename(p)[:-4] + '.png'))",
        out = images.display(),
        root = root.display(),
        s = SIZE
    );
    run_python(&["-c", &script]);
    std::fs::write(images.join("broken.png"), b"not a png").unwrap();
    let output = asl(&[
        "infer",
        "--model",
        model.to_str().unwrap(),
        "--device",
        "cpu",
        "--top-k",
        "80",
        images.to_str().unwrap(),
    ]);
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 6);
    assert!(lines[5]["error"].as_str().unwrap().contains("broken.png"), "{}", lines[5]);
    assert_eq!(lines.iter().filter(|l| l["labels"].as_array().is_some_and(|a| a.len() == 80)).count(), 5);
    assert!(String::from_utf8_lossy(&output.stderr).contains("images/s"), "throughput is printed");

    let check = format!(
        "import json, sys, numpy as np, torch\nfrom PIL import Image\n\
         from torchvision.transforms.functional import normalize\n\
         m = torch.jit.load('{model}'); m.eval()\nworst = 0.0\ncard = json.load(open('{card}'))\n\
         for line in sys.stdin:\n\
         \x20   r = json.loads(line)\n\
         \x20   if 'error' in r: continue\n\
         \x20   x = torch.from_numpy(np.asarray(Image.open(r['file']).convert('RGB'))).float().div(255).permute(2, 0, 1)\n\
         \x20   x = normalize(x, card['mean'], card['std'])[None]\n\
         \x20   with torch.no_grad(): p = torch.sigmoid(m(x))[0]\n\
         \x20   names = card['class_names'] or [str(i) for i in range(80)]\n\
         \x20   for label in r['labels']:\n\
         \x20       worst = max(worst, abs(label['probability'] - p[names.index(label['name'])].item()))\n\
         print(worst)",
        model = model.display(),
        card = model.with_extension("json").display()
    );
    let mut child = Command::new(common::python::python())
        .args(["-c", &check])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&output.stdout).unwrap();
    let result = child.wait_with_output().unwrap();
    let worst: f64 = String::from_utf8_lossy(&result.stdout).trim().parse().unwrap();
    assert!(worst < 1e-5, "asl infer and PyTorch differ by {worst}");
}

#[test]
fn infer_refuses_thresholds_tuned_for_another_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.pt");
    export_model("test_resnet", 5, 32, &model);
    let image = dir.path().join("one.png");
    image::RgbImage::from_pixel(32, 32, image::Rgb([9, 99, 199])).save(&image).unwrap();
    let thresholds = r#"{"class_names": ["a", "b", "c"], "thresholds": [0.5, 0.5, 0.5], "f1": [null, null, null]}"#;
    std::fs::write(dir.path().join("m.thresholds.json"), thresholds).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_asl"))
        .args(["infer", "--device", "cpu", "--model", model.to_str().unwrap(), image.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("m.thresholds.json holds 3 thresholds but") && stderr.contains("has 5 classes"),
        "{stderr}"
    );
    // An explicit threshold does not need the file.
    asl(&[
        "infer",
        "--device",
        "cpu",
        "--threshold",
        "0.3",
        "--model",
        model.to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
}
