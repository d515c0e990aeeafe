//! `accelwatch alerts list|show`: the kept alert evidence, for a box
//! reached over SSH.

use std::path::PathBuf;

use anyhow::{anyhow, Context};

use crate::cli::{AlertsCommand, EvidenceDirArgs};
use crate::cmd::exit::{failure, Failure};
use crate::config::Config;
use crate::eval::plots_evidence::{evidence_plot, utc};
use crate::evidence::store::{EvidenceError, EvidenceLimits, EvidenceStore};
use crate::EX_CONFIG;

/// The directory `from` names, and the store read from it (unchanged).
fn open(from: &EvidenceDirArgs) -> Result<EvidenceStore, Failure> {
    let (dir, limits) = match (&from.dir, &from.config) {
        (Some(dir), _) => (
            dir.clone(),
            EvidenceLimits {
                max_count: usize::MAX,
                max_bytes: u64::MAX,
            },
        ),
        (None, Some(path)) => {
            let config = Config::load(path)?;
            let dir: PathBuf = crate::evidence::evidence_dir(&config.detector, &config.model)
                .ok_or_else(|| {
                    failure(
                        EX_CONFIG,
                        anyhow!(
                            "{}: keeps no alert evidence (detector.evidence_dir is off, or unset \
                             without model.dir)",
                            path.display()
                        ),
                    )
                })?;
            let limits = EvidenceLimits {
                max_count: config.detector.evidence_max_count,
                max_bytes: config.detector.evidence_max_bytes,
            };
            (dir, limits)
        }
        (None, None) => unreachable!("clap requires --dir or --config"),
    };
    if !dir.is_dir() {
        return Err(failure(
            EX_CONFIG,
            anyhow!(
                "{}: no evidence directory there (the daemon makes it when it starts)",
                dir.display()
            ),
        ));
    }
    let store = EvidenceStore::read(&dir, limits).map_err(|e| failure(EX_CONFIG, e.into()))?;
    for (path, why) in store.skipped() {
        eprintln!(
            "warning: skipping {} ({}: not evidence accelwatch wrote)",
            path.display(),
            why.as_str()
        );
    }
    Ok(store)
}

pub fn alerts(command: AlertsCommand) -> Result<(), Failure> {
    match command {
        AlertsCommand::List { from } => {
            let store = open(&from)?;
            let listed = store.list();
            if listed.is_empty() {
                println!("{}: no alert evidence yet", store.dir().display());
            }
            for s in listed {
                println!(
                    "{}  {}  score {:.4} / threshold {:.4}  window #{}  {}  {}",
                    s.id,
                    utc(s.time_ms),
                    s.score,
                    s.threshold,
                    s.seq,
                    s.model,
                    // Debug quoting: a device id cannot move the cursor or
                    // colour the terminal.
                    format_args!("{:?}", s.device)
                );
            }
            Ok(())
        }
        AlertsCommand::Show { id, from, out } => {
            let store = open(&from)?;
            let evidence = store.get(&id).map_err(|e| match e {
                EvidenceError::Unknown { .. } => failure(
                    1,
                    anyhow!("{e} (`accelwatch alerts list` shows the ids kept)"),
                ),
                other => failure(1, other.into()),
            })?;
            match out {
                Some(out) => {
                    crate::scope::store::write_atomically(
                        &out,
                        evidence_plot(&evidence).as_bytes(),
                    )
                    .with_context(|| format!("writing {}", out.display()))?;
                    println!("{}: the plot of evidence {id}", out.display());
                }
                None => println!(
                    "{}",
                    serde_json::to_string_pretty(&evidence).context("evidence as JSON")?
                ),
            }
            Ok(())
        }
    }
}
