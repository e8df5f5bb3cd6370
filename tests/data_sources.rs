//! Sources read real and hand-built files: the COCO slice in
//! ../shared/data/coco-mini, a VOC-layout fixture, CSV lists, and the
//! synthetic generator; broken files give errors naming what is wrong.

mod common;

use asl::data::sources::{
    load_coco, load_list, load_voc, write_synthetic, CocoOptions, CocoSplit, CrowdPolicy, DifficultPolicy, ListOptions,
    SynthConfig,
};
use common::coco_mini::coco_mini;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Expected labels straight from the raw JSON: image file → sorted class indices.
fn labels_from_raw_json(path: &Path) -> BTreeMap<String, Vec<u32>> {
    let raw: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut ids: Vec<i64> = raw["categories"].as_array().unwrap().iter().map(|c| c["id"].as_i64().unwrap()).collect();
    ids.sort();
    let files: BTreeMap<i64, String> = raw["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_i64().unwrap(), i["file_name"].as_str().unwrap().to_string()))
        .collect();
    let mut labels: BTreeMap<String, BTreeSet<u32>> = files.values().map(|f| (f.clone(), BTreeSet::new())).collect();
    for a in raw["annotations"].as_array().unwrap() {
        let class = ids.iter().position(|&id| id == a["category_id"].as_i64().unwrap()).unwrap() as u32;
        labels.get_mut(&files[&a["image_id"].as_i64().unwrap()]).unwrap().insert(class);
    }
    labels.into_iter().map(|(k, v)| (k, v.into_iter().collect())).collect()
}

#[test]
#[cfg_attr(
    not(asl_coco_mini),
    ignore = "needs ../shared/data/coco-mini, the real COCO slice; absent when this was built"
)]
fn coco_mini_train_matches_the_raw_annotations() {
    let root = coco_mini();
    let split = CocoSplit::find(&root, "train").unwrap();
    assert!(split.annotations.ends_with("annotations/instances_train2017.json"));
    let dataset = split.load(&CocoOptions::default()).unwrap();
    assert_eq!(dataset.num_classes(), 80);
    assert_eq!(dataset.class_names[0], "person");
    assert_eq!(dataset.class_names[79], "toothbrush", "ids 1..90 with gaps map to 0..79 in ascending order");
    assert_eq!(dataset.len(), 208);
    let expected = labels_from_raw_json(&split.annotations);
    for sample in (0..dataset.len()).map(|i| dataset.sample(i)) {
        let file = sample.path.file_name().unwrap().to_str().unwrap();
        assert_eq!(sample.positives, expected[file], "{file}");
        assert!(sample.path.is_file(), "{}", sample.path.display());
    }
    let background = (0..dataset.len()).filter(|&i| dataset.sample(i).positives.is_empty()).count();
    assert_eq!(background, 2, "the two background images are kept as all-negative");
    let dropped = split.load(&CocoOptions { drop_unannotated: true, ..Default::default() }).unwrap();
    assert_eq!(dropped.len(), 206);
    assert!(dataset.mean_positives() > 1.0);
}

#[test]
fn coco_crowd_policy() {
    let dir = tempfile::tempdir().unwrap();
    let json = r#"{"images": [{"id": 7, "file_name": "a.jpg"}],
        "annotations": [{"image_id": 7, "category_id": 5, "iscrowd": 1}, {"image_id": 7, "category_id": 3, "iscrowd": 0}],
        "categories": [{"id": 3, "name": "c3"}, {"id": 5, "name": "c5"}]}"#;
    let path = dir.path().join("instances.json");
    std::fs::write(&path, json).unwrap();
    let load = |crowd| load_coco(&path, dir.path(), &CocoOptions { crowd, ..Default::default() }).unwrap().sample(0);
    assert_eq!(load(CrowdPolicy::Include).positives, vec![0, 1]);
    assert_eq!(load(CrowdPolicy::Exclude).positives, vec![0]);
    let unknown = load(CrowdPolicy::Unknown);
    assert_eq!((unknown.positives, unknown.unknown), (vec![0], vec![1]));
}

#[test]
fn broken_coco_files_name_the_file_and_the_fault() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("instances_bad.json");
    let cases = [
        (
            r#"{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1, "category_id": 1}, {"image_id": 1, "category_id": "x"}], "categories": [{"id": 1, "name": "a"}]}"#,
            "invalid annotation JSON at `annotations[1].category_id`",
        ),
        (r#"{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": ["#, "invalid annotation JSON"),
        (
            r#"{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1, "category_id": 91}], "categories": [{"id": 1, "name": "a"}]}"#,
            "image a.jpg has an annotation with category id 91, which is not in the category list",
        ),
        (
            r#"{"images": [], "annotations": [{"image_id": 4, "category_id": 1}], "categories": [{"id": 1, "name": "a"}]}"#,
            "refers to image id 4",
        ),
    ];
    for (json, expected) in cases {
        std::fs::write(&path, json).unwrap();
        let err = load_coco(&path, dir.path(), &CocoOptions::default()).unwrap_err().to_string();
        assert!(err.contains("instances_bad.json") && err.contains(expected), "{err}");
    }
    let err = CocoSplit::find(dir.path(), "train").unwrap_err().to_string();
    assert!(err.contains("annotations/instances_train2017.json, annotations/instances_train2014.json"), "{err}");
}

fn write_voc_fixture(root: &Path) {
    std::fs::create_dir_all(root.join("ImageSets/Main")).unwrap();
    std::fs::create_dir_all(root.join("Annotations")).unwrap();
    std::fs::create_dir_all(root.join("JPEGImages")).unwrap();
    std::fs::write(root.join("ImageSets/Main/trainval.txt"), "000001\n000002\n").unwrap();
    let xml = |objects: &[(&str, u8)]| {
        let body: String = objects
            .iter()
            .map(|(name, difficult)| format!("<object><name>{name}</name><difficult>{difficult}</difficult></object>"))
            .collect();
        format!("<annotation><filename>x.jpg</filename>{body}</annotation>")
    };
    std::fs::write(root.join("Annotations/000001.xml"), xml(&[("dog", 0), ("person", 0), ("dog", 0)])).unwrap();
    std::fs::write(root.join("Annotations/000002.xml"), xml(&[("cat", 1), ("tvmonitor", 0)])).unwrap();
}

#[test]
fn voc_layout_with_difficult_policies() {
    let dir = tempfile::tempdir().unwrap();
    write_voc_fixture(dir.path());
    let dataset = load_voc(dir.path(), "trainval", DifficultPolicy::Include).unwrap();
    assert_eq!(dataset.num_classes(), 20);
    assert_eq!(dataset.sample(0).positives, vec![11, 14], "dog = 11, person = 14");
    assert!(dataset.path(0).ends_with("JPEGImages/000001.jpg"));
    assert_eq!(dataset.sample(1).positives, vec![7, 19]);
    assert_eq!(load_voc(dir.path(), "trainval", DifficultPolicy::Exclude).unwrap().sample(1).positives, vec![19]);
    let unknown = load_voc(dir.path(), "trainval", DifficultPolicy::Unknown).unwrap();
    assert_eq!((unknown.sample(1).positives, unknown.sample(1).unknown), (vec![19], vec![7]));

    std::fs::write(
        dir.path().join("Annotations/000002.xml"),
        "<annotation><object><name>unicorn</name></object></annotation>",
    )
    .unwrap();
    let err = load_voc(dir.path(), "trainval", DifficultPolicy::Include).unwrap_err().to_string();
    assert!(err.contains("000002.xml") && err.contains("unknown class name `unicorn`"), "{err}");
    std::fs::write(dir.path().join("Annotations/000002.xml"), "<annotation><object>").unwrap();
    let err = load_voc(dir.path(), "trainval", DifficultPolicy::Include).unwrap_err().to_string();
    assert!(err.contains("000002.xml"), "{err}");
}

#[test]
fn csv_and_tsv_lists_with_partial_labels() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("list.csv");
    std::fs::write(&csv, "path,labels,unknown\nimg/a.jpg,cat dog,sky\nimg/b.jpg,,cat\nimg/c.jpg,sky,\n").unwrap();
    let dataset = load_list(&csv, &ListOptions::default()).unwrap();
    assert_eq!(dataset.class_names, vec!["cat", "dog", "sky"]);
    assert_eq!(dataset.sample(0).positives, vec![0, 1]);
    assert_eq!(dataset.sample(0).unknown, vec![2]);
    assert_eq!(dataset.sample(1).unknown, vec![0]);
    assert!(dataset.path(0).ends_with("img/a.jpg"));
    let mut row = vec![0.0; 3];
    dataset.write_targets(0, &mut row);
    assert_eq!(row, vec![1.0, 1.0, -1.0]);

    let tsv = dir.path().join("list.tsv");
    std::fs::write(&tsv, "labels\tpath\ncat;dog\tx.jpg\nbird\ty.jpg\n").unwrap();
    let options =
        ListOptions { label_separator: ';', classes: Some(vec!["cat".into(), "dog".into()]), ..Default::default() };
    let err = load_list(&tsv, &options).unwrap_err().to_string();
    assert!(err.contains("list.tsv:3: label `bird` is not one of the 2 classes"), "{err}");

    std::fs::write(&csv, "file,tags\na.jpg,x\n").unwrap();
    let err = load_list(&csv, &ListOptions::default()).unwrap_err().to_string();
    assert!(err.contains("list.csv:1: the header must name `path` and `labels` columns"), "{err}");
}

#[test]
fn synthetic_data_is_deterministic_imbalanced_and_drops_labels() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = SynthConfig { train_images: 200, val_images: 50, ..Default::default() };
    write_synthetic(a.path(), &config).unwrap();
    write_synthetic(b.path(), &config).unwrap();
    for file in ["annotations/instances_train.json", "train/000007.png", "val/000049.png"] {
        assert_eq!(std::fs::read(a.path().join(file)).unwrap(), std::fs::read(b.path().join(file)).unwrap(), "{file}");
    }
    let train = CocoSplit::find(a.path(), "train").unwrap().load(&CocoOptions::default()).unwrap();
    assert_eq!((train.len(), train.num_classes()), (200, 32));
    let rate = train.mean_positives() / 32.0;
    assert!((0.03..0.1).contains(&rate), "positive rate {rate} should be COCO-like (~3.6%)");

    let dropped = tempfile::tempdir().unwrap();
    write_synthetic(dropped.path(), &SynthConfig { drop_positive: 0.5, ..config }).unwrap();
    let with_drops = CocoSplit::find(dropped.path(), "train").unwrap().load(&CocoOptions::default()).unwrap();
    let ratio = with_drops.mean_positives() / train.mean_positives();
    assert!((0.4..0.6).contains(&ratio), "half the positives should be gone, kept {ratio}");
    let val = |dir: &Path| CocoSplit::find(dir, "val").unwrap().load(&CocoOptions::default()).unwrap();
    assert_eq!(val(dropped.path()), val(a.path()).clone_with_root(dropped.path(), a.path()), "validation stays clean");
}

trait CloneWithRoot {
    fn clone_with_root(&self, new: &Path, old: &Path) -> Self;
}

impl CloneWithRoot for asl::data::Dataset {
    fn clone_with_root(&self, new: &Path, old: &Path) -> Self {
        let samples = (0..self.len())
            .map(|i| {
                let sample = self.sample(i);
                asl::data::Sample { path: new.join(sample.path.strip_prefix(old).unwrap()), ..sample }
            })
            .collect();
        asl::data::Dataset::from_samples(self.class_names.clone(), samples)
    }
}
