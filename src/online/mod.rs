//! Online training: the daemon learns "normal" from its own stream.
//!
//! With `training.mode = "online"` and no model in `model.dir`, the scorer
//! collects windows (calibration) until `training.min_windows`, then trains
//! the configured variant on a thread of its own, niced so that ingestion
//! and scoring keep their share of the CPU, and hands the model back to the
//! scorer, which serves it from its next batch. The model is written to the
//! [`crate::scope::store::ModelStore`] first, so a restart serves it.
//!
//! Nothing tells the daemon which collected windows are normal. Training
//! therefore runs twice: the first model scores every collected window, the
//! windows whose error is far above the bulk (median + 6 robust standard
//! deviations, from the median absolute deviation) and the windows
//! overlapping them are excluded, and the second model is trained on the
//! rest. An anomaly that is a minority of the calibration data is thus not
//! learned as normal.

pub mod background;
pub mod drift;
pub mod learn;
pub mod normal;
pub mod trainer;

#[cfg(test)]
mod tests {
    use super::background::*;
    use super::drift::*;
    use super::learn::*;
    use super::normal::*;
    use super::trainer::*;
    use crate::config::Config;
    use crate::control::{Label, Mark};
    use crate::scope::store::ModelStore;
    use crate::telemetry::Metrics;
    use crate::window::Window;
    use std::sync::Arc;

    fn window(device: &str, value: f32) -> Window {
        Window {
            device: Arc::from(device),
            seq: 0,
            t_start: 0.0,
            t_end: 0.0,
            data: vec![value; 2],
            scope: None,
            timeline: Default::default(),
        }
    }

    #[test]
    fn only_windows_well_clear_of_an_anomaly_count_as_normal() {
        let mut normal = NormalWindows::new(100, 1, 16);
        let flags = [false, false, false, true, false, false, false, false];
        for (i, over) in flags.iter().enumerate() {
            normal.observe(&window("a", i as f32), *over);
        }
        // 0 and 1 are confirmed; 2 is dropped with the anomaly at 3; 4 is
        // the cool-down; 5 and 6 are confirmed by their successors; 7 waits.
        let kept: Vec<f32> = normal.kept.iter().map(|k| k.data[0]).collect();
        assert_eq!(kept, vec![0.0, 1.0, 5.0, 6.0]);
        let (train_set, held_back) = normal.split(2);
        assert_eq!(held_back.len(), 1);
        assert_eq!(train_set.len(), 2, "the window before the cut overlaps it");
    }

    fn timed(device: &str, i: usize) -> Window {
        Window {
            device: Arc::from(device),
            seq: i as u64,
            t_start: i as f64 * 1000.0,
            t_end: i as f64 * 1000.0 + 2540.0,
            data: vec![i as f32; 128 * 3],
            scope: None,
            timeline: Default::default(),
        }
    }

    #[test]
    fn marked_ranges_are_not_learned_or_are_learned_whatever_the_score() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::open(dir.path()).unwrap();
        let mut trainer = OnlineTrainer::new(
            &Config::default(),
            store.clone(),
            Metrics::new(),
            Arc::from("fleet"),
        )
        .unwrap();
        let a: Vec<Window> = (0..10).map(|i| timed("a", i)).collect();
        trainer.collect(&a);
        assert_eq!(trainer.collected(), 10);
        let abnormal = |device: Option<&str>| Mark {
            label: Label::Abnormal,
            from_ms: 3000.0,
            to_ms: 5000.0,
            device: device.map(String::from),
        };
        // Windows 1 to 5 overlap 3000..5000.
        assert_eq!(trainer.mark(abnormal(Some("a"))), 5);
        assert_eq!(trainer.collected(), 5);
        trainer.collect(&[timed("a", 4), timed("b", 4)]);
        assert_eq!(trainer.collected(), 6, "a's window is marked, b's is not");

        // Retraining buffer: over-threshold windows in a normal range count.
        trainer.mark(Mark {
            label: Label::Normal,
            from_ms: 20_000.0,
            to_ms: 40_000.0,
            device: None,
        });
        let c: Vec<Window> = (20..30).map(|i| timed("c", i)).collect();
        trainer.observe(&c, std::iter::repeat(true));
        assert_eq!(
            trainer.normal_windows(),
            10 - 2,
            "all but the last two (the margin)"
        );
        trainer.mark(Mark {
            label: Label::Abnormal,
            from_ms: 25_000.0,
            to_ms: 25_000.0,
            device: Some("c".into()),
        });
        assert_eq!(
            trainer.normal_windows(),
            8 - 3,
            "windows 23, 24, 25 overlap 25 s"
        );

        // A restart keeps the marks: a's marked range is still not learned.
        drop(trainer);
        let mut restarted = OnlineTrainer::new(
            &Config::default(),
            store,
            Metrics::new(),
            Arc::from("fleet"),
        )
        .unwrap();
        assert_eq!(restarted.marks.len(), 3);
        restarted.collect(&[timed("a", 4), timed("a", 9)]);
        assert_eq!(
            restarted.collected(),
            1,
            "window 4 is in the abnormal range"
        );
    }

    #[test]
    fn a_calibration_can_also_wait_for_a_duration() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::open(dir.path()).unwrap();
        let mut config = Config::default();
        config.training.min_windows = 20;
        config.training.min_duration_s = 3600.0;
        let trainer = |store: &ModelStore| {
            OnlineTrainer::new(&config, store.clone(), Metrics::new(), Arc::from("fleet")).unwrap()
        };
        let mut first = trainer(&store);
        assert_eq!(first.progress(), 0.0);
        first.collect(&(0..30).map(|i| timed("a", i)).collect::<Vec<_>>());
        assert!(!first.is_training(), "enough windows, not yet an hour");
        assert!(first.progress() < 0.01);
        // A restart keeps the start; an hour later the training begins.
        let since = store.calibrating_since().expect("saved");
        drop(first);
        let mut restarted = trainer(&store);
        assert_eq!(restarted.calibrating_since, Some(since));
        restarted.calibrating_since = Some(since - 3_600_000.0);
        assert_eq!(restarted.progress(), 0.0, "the windows were not saved yet");
        restarted.collect(&(0..20).map(|i| timed("b", i)).collect::<Vec<_>>());
        assert!(restarted.is_training());
        assert_eq!(
            store.load_collected(128 * 3).unwrap().map(|set| set.len()),
            Some(20),
            "the windows being trained on are on disk until a model is stored"
        );
    }

    #[test]
    fn online_training_and_retraining_build_the_configured_score() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::open(dir.path()).unwrap();
        let mut config = Config::default();
        config.model.variant = crate::model::config::Variant::Basic;
        config.model.score = Some(crate::model::config::ScoreChoice::Combined);
        config.training.epochs = 5;
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let set = crate::recording::Recording::window_set_of(
            &repo.join("data/watch/train-pen.csv"),
            "series",
            &config.input,
            &config.window,
        )
        .unwrap();
        let mut pacer = CpuPacer::new(1.0);
        let learned = learn(&config, &store, &set, &mut pacer).unwrap();
        let combined = |meta: &crate::model::ModelMetadata| {
            matches!(
                meta.score,
                crate::model::meta::ScoreKind::Combined { k: 5, .. }
            )
        };
        assert!(
            combined(&learned.model.meta),
            "{:?}",
            learned.model.meta.score
        );
        // Online training has no labels: no activity head, none published.
        assert_eq!(learned.model.meta.activity, None);
        let relearned = relearn(&config, &store, &set, &set, learned.model, &mut pacer).unwrap();
        assert_eq!(relearned.model.meta.activity, None);
        assert!(
            combined(&relearned.model.meta),
            "{:?}",
            relearned.model.meta.score
        );
    }

    #[test]
    fn the_pacer_keeps_a_thread_to_its_share() {
        let share = in_background(0.25, |pacer| {
            let started = std::time::Instant::now();
            let mut x = 0u64;
            while started.elapsed() < std::time::Duration::from_millis(400) {
                for i in 0..10_000u64 {
                    x = x.wrapping_mul(31).wrapping_add(i);
                }
                std::hint::black_box(x);
                pacer.pace();
            }
            pacer.measured()
        })
        .unwrap();
        // Sleeping can only lower the share; 0.3 leaves room for the last
        // slice of work after the final pace.
        assert!(share <= 0.3, "measured share {share}");
        assert!(share > 0.0, "the work ran");
    }

    #[test]
    fn scheduled_retraining() {
        let hours = |h: f64| std::time::Duration::from_secs_f64(h * 3600.0);
        assert!(!retrain_due(hours(1000.0), 0.0), "0 is off");
        assert!(!retrain_due(hours(23.9), 24.0));
        assert!(retrain_due(hours(24.0), 24.0));
    }

    #[test]
    fn drift_is_the_alarm_rate_over_the_calibrated_one() {
        let mut drift = Drift::new(0.99);
        for i in 0..Drift::WINDOWS {
            drift.observe(i % 100 == 0);
        }
        assert!((drift.ratio() - 1.0).abs() < 1e-9);
        for i in 0..Drift::WINDOWS {
            drift.observe(i % 10 == 0);
        }
        assert!((drift.ratio() - 10.0).abs() < 1e-6);
    }

    #[test]
    fn outlying_windows_and_their_neighbours_are_excluded() {
        let mut errors = vec![1.0f32; 20];
        for (i, e) in errors.iter_mut().enumerate() {
            *e += (i % 3) as f32 * 0.05;
        }
        errors[10] = 9.0;
        let streams = vec![0; 20];
        let keep = inliers(&errors, &streams, 1);
        assert_eq!(keep.len(), 17);
        assert!(!keep.contains(&9) && !keep.contains(&10) && !keep.contains(&11));
        // Neighbours in another stream stay.
        let mut streams = vec![0; 20];
        streams[11..].iter_mut().for_each(|s| *s = 1);
        assert!(inliers(&errors, &streams, 1).contains(&11));
        assert_eq!(
            inliers(&[1.0; 5], &[0; 5], 1).len(),
            5,
            "all alike: none excluded"
        );
    }

    #[test]
    fn the_first_pass_scores_each_fold_by_the_other_folds_model() {
        // Nine streams of 30 windows balance: whole streams, never split.
        let streams: Vec<usize> = (0..9).flat_map(|s| [s; 30]).collect();
        let folds = two_folds(&streams);
        for s in 0..9 {
            let of_s: Vec<bool> = (0..270)
                .filter(|&i| streams[i] == s)
                .map(|i| folds[i])
                .collect();
            assert!(of_s.iter().all(|f| *f == of_s[0]), "stream {s} split");
        }
        let second = folds.iter().filter(|f| **f).count();
        assert!((120..=150).contains(&second), "{second} of 270 in one fold");
        // One long stream and a short one cannot balance: quarters of each,
        // alternating, so each fold holds half of every stream.
        let streams: Vec<usize> = [[0; 80].as_slice(), &[1; 8]].concat();
        let folds = two_folds(&streams);
        assert_eq!(folds[..80].iter().filter(|f| **f).count(), 40);
        assert!(!folds[0] && folds[20] && !folds[40] && folds[79]);
        assert_eq!(folds[80..].iter().filter(|f| **f).count(), 4);
    }

    #[test]
    fn a_retraining_worse_on_the_held_back_windows_is_rejected_and_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::open(dir.path()).unwrap();
        let mut config = Config::default();
        config.model.variant = crate::model::config::Variant::Basic;
        config.training.epochs = 20;
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let pen = crate::recording::Recording::window_set_of(
            &repo.join("data/watch/train-pen.csv"),
            "series",
            &config.input,
            &config.window,
        )
        .unwrap();
        let options = crate::recording::ReadOptions {
            columns: crate::source::replay::config::CsvColumns {
                device_column: "device".into(),
                time_column: "t_ms".into(),
            },
            channels: config.input.channels.clone(),
            sample_rate_hz: config.input.sample_rate_hz,
            filters: vec!["exercise=ABD".parse().unwrap()],
            ..Default::default()
        };
        let abd = crate::recording::Recording::read(&repo.join("data/watch/demo.csv"), &options)
            .unwrap()
            .window_set(crate::window::WindowSpec::new(
                &config.window,
                config.input.channels.len(),
                config.input.sample_rate_hz,
            ));
        let mut pacer = CpuPacer::new(1.0);
        let served = learn(&config, &store, &pen, &mut pacer).unwrap();
        // A candidate that learnt another motion alarms on the PEN held back.
        let outcome = relearn(&config, &store, &abd, &pen, served.model, &mut pacer);
        match outcome {
            Err(LearnError::Rejected { new_rate, old_rate }) => {
                assert!(
                    new_rate > old_rate + NOT_WORSE_MARGIN,
                    "{new_rate} {old_rate}"
                )
            }
            other => panic!("not rejected: {:?}", other.map(|l| l.version)),
        }
        assert_eq!(
            store.versions().unwrap().len(),
            1,
            "the rejected model is not stored"
        );
    }
}
