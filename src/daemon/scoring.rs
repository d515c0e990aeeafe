//! The scorer: routes each window to its scope, runs commands, and scores
//! batches.

use crate::daemon::error::CommandRefused;
use crate::daemon::served::{ScopeConfig, ServedScope, Serving};
use crate::model::inference::BackendError;
use tokio::sync::{mpsc, watch};

use std::collections::HashMap;
use std::sync::Arc;

use crate::control::{ControlCommand, Target};
use crate::daemon::health::Pulse;
use crate::daemon::reload::PendingModel;
use crate::daemon::stages::Sinks;
use crate::logging::RateLimited;
use crate::model::train::config::ScopeKind;
use crate::model::LoadedModel;
use crate::record::Output;
use crate::scope::rules::FLEET;
use crate::telemetry::Metrics;
use crate::window::{Spares, Window};

/// The scorer's state: the model scopes, and the commands to them.
pub(crate) struct Scoring {
    pub(crate) scopes: Vec<ServedScope>,
    pub(crate) by_name: HashMap<Arc<str>, usize>,
    pub(crate) commands: Option<std::sync::mpsc::Receiver<ControlCommand>>,
    pub(crate) config: ScopeConfig,
    pub(crate) metrics: Metrics,
    pub(crate) warned: RateLimited,
    /// Set by a reload: every device or group scope re-reads its current
    /// version.
    pub(crate) rescan: Arc<std::sync::atomic::AtomicBool>,
    /// The evidence ids of scopes opened later.
    pub(crate) evidence: Option<crate::evidence::EvidenceIds>,
    /// Where scored windows' buffers go back to the windower.
    pub(crate) spares: Option<Spares>,
}

impl Scoring {
    pub(crate) fn new(
        scopes: Vec<ServedScope>,
        commands: Option<std::sync::mpsc::Receiver<ControlCommand>>,
        config: ScopeConfig,
        metrics: Metrics,
    ) -> Self {
        let by_name = scopes
            .iter()
            .enumerate()
            .map(|(i, scope)| (scope.name.clone(), i))
            .collect();
        Self {
            scopes,
            by_name,
            commands,
            config,
            metrics,
            warned: RateLimited::new(std::time::Duration::from_secs(60)),
            rescan: Arc::default(),
            evidence: None,
            spares: None,
        }
    }

    /// Scored windows' buffers go back to the windower through `spares`.
    pub(crate) fn recycling(mut self, spares: Spares) -> Self {
        self.spares = Some(spares);
        self
    }

    pub(crate) fn rescan_on(mut self, flag: Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.rescan = flag;
        self
    }

    /// Scopes opened from now on keep their raises' evidence with `ids`.
    pub(crate) fn with_evidence(mut self, ids: Option<crate::evidence::EvidenceIds>) -> Self {
        self.evidence = ids;
        self
    }

    /// After a reload, the device and group scopes serve their directories'
    /// current versions (the fleet's comes through the reloader).
    pub(crate) fn reread_scopes(&mut self) -> Vec<Output> {
        if !self.rescan.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Vec::new();
        }
        let (config, metrics) = (&self.config, &self.metrics);
        self.scopes
            .iter_mut()
            .filter(|scope| &*scope.name != FLEET)
            .filter_map(|scope| scope.reread(config, metrics))
            .map(Output::Status)
            .collect()
    }

    pub(crate) fn trains_online(&self) -> bool {
        self.config.trainer.is_some()
    }

    /// The scope named `name`, opened (and its directory made) when it is
    /// first met; None when it cannot be opened (logged).
    pub(crate) fn scope_index(&mut self, name: &Arc<str>) -> Option<usize> {
        if let Some(&i) = self.by_name.get(name) {
            return Some(i);
        }
        match ServedScope::open(
            &self.config,
            &self.metrics,
            name.clone(),
            self.evidence.as_ref(),
        ) {
            Ok(scope) => {
                tracing::info!(scope = %name, "a new model scope: calibrating");
                self.scopes.push(scope);
                self.by_name.insert(name.clone(), self.scopes.len() - 1);
                Some(self.scopes.len() - 1)
            }
            Err(error) => {
                if let Some(held_back) = self.warned.check("scope", std::time::Instant::now()) {
                    tracing::error!(
                        scope = %name, %error, held_back,
                        "cannot open a model scope; its windows go to the fleet scope"
                    );
                }
                None
            }
        }
    }

    /// Splits a batch by scope, each part in arrival order. Windows of a
    /// scope beyond `training.max_scopes` (or one that cannot be opened)
    /// go to the fleet scope.
    pub(crate) fn route(&mut self, batch: &mut Vec<Window>) -> Vec<(usize, Vec<Window>)> {
        if self.config.kind == ScopeKind::Fleet {
            return vec![(0, std::mem::take(batch))];
        }
        let fleet: Arc<str> = Arc::from(FLEET);
        let mut parts: Vec<(usize, Vec<Window>)> = Vec::new();
        let mut overflow = 0;
        for window in batch.drain(..) {
            let name = window.scope.clone().unwrap_or_else(|| fleet.clone());
            let own = self.by_name.get(&name).copied().or_else(|| {
                let own_scopes = self.scopes.iter().filter(|s| &*s.name != FLEET).count();
                if &*name != FLEET && own_scopes >= self.config.max_scopes {
                    return None;
                }
                self.scope_index(&name)
            });
            let index = match own {
                Some(i) => i,
                None => {
                    overflow += 1;
                    match self.scope_index(&fleet) {
                        Some(i) => i,
                        None => continue,
                    }
                }
            };
            match parts.iter_mut().find(|(i, _)| *i == index) {
                Some((_, windows)) => windows.push(window),
                None => parts.push((index, vec![window])),
            }
        }
        if overflow > 0 {
            self.metrics.scope_overflow(overflow);
            if let Some(held_back) = self.warned.check("overflow", std::time::Instant::now()) {
                tracing::warn!(
                    max_scopes = self.config.max_scopes,
                    held_back,
                    "more devices or groups than training.max_scopes: the rest are scored \
                     by the fleet model (counted in accelwatch_scope_overflow_windows_total)"
                );
            }
        }
        parts
    }

    /// A reloaded model (SIGHUP, a changed file) is the fleet scope's,
    /// served as the reloaded config says.
    pub(crate) fn reload(&mut self, model: LoadedModel, serving: &Serving) {
        match self.by_name.get(FLEET) {
            Some(&i) => self.scopes[i].serve(model, serving, &self.metrics),
            None => tracing::warn!("a reloaded model is the fleet's; this daemon serves none"),
        }
    }

    /// Models the online trainers finished, served; their statuses, and
    /// the scores of the windows held while they trained.
    pub(crate) fn take_learned(&mut self) -> Result<Vec<Output>, BackendError> {
        let (serving, metrics) = (&self.config.serving, &self.metrics);
        let mut out = Vec::new();
        for scope in &mut self.scopes {
            out.extend(scope.take_learned(serving, metrics)?);
        }
        Ok(out)
    }

    /// At the end of a finite input: waits (at most `training.end_wait_ms`)
    /// for the first trainings still running, unless a shutdown was asked
    /// for, then serves their models and scores the windows they held.
    fn finish_first_trainings(
        &mut self,
        stop: &watch::Receiver<bool>,
    ) -> Result<Vec<Output>, BackendError> {
        let waiting = |scopes: &[ServedScope]| scopes.iter().filter(|s| s.first_training()).count();
        if !self.trains_online() || waiting(&self.scopes) == 0 || *stop.borrow() {
            return Ok(Vec::new());
        }
        let limit = std::time::Duration::from_millis(self.config.end_wait_ms);
        tracing::info!(
            scopes = waiting(&self.scopes),
            limit_ms = limit.as_millis() as u64,
            "the input ended while a first model trains: waiting for it, then scoring what it held"
        );
        let deadline = std::time::Instant::now() + limit;
        let mut out = Vec::new();
        loop {
            out.extend(self.take_learned()?);
            let left = waiting(&self.scopes);
            if left == 0 {
                return Ok(out);
            }
            if *stop.borrow() || std::time::Instant::now() >= deadline {
                tracing::warn!(
                    scopes = left,
                    "stopped waiting for the first training (training.end_wait_ms or a signal): \
                     its windows are saved and train again at the next start"
                );
                return Ok(out);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Carries out the commands that arrived, and scheduled retrainings;
    /// returns status records to publish.
    pub(crate) fn run_commands(&mut self) -> Vec<Output> {
        let (config, metrics) = (&self.config, &self.metrics);
        let mut out: Vec<Output> = self
            .scopes
            .iter_mut()
            .filter_map(|scope| scope.scheduled(config, metrics))
            .map(Output::Status)
            .collect();
        while let Some(command) = self.commands.as_ref().and_then(|rx| rx.try_recv().ok()) {
            let name = command.as_str();
            let result = self.run_command(&command, &mut out);
            let label = if result.is_ok() {
                "accepted"
            } else {
                "refused"
            };
            self.metrics.command(name, label);
            if let Err(why) = result {
                tracing::warn!(command = name, %why, "command refused");
            }
        }
        out
    }

    /// Runs `command` in the scopes it is for; accepted when at least one
    /// of them took it.
    pub(crate) fn run_command(
        &mut self,
        command: &ControlCommand,
        out: &mut Vec<Output>,
    ) -> Result<(), CommandRefused> {
        let target = match command {
            ControlCommand::Calibrate(t)
            | ControlCommand::Retrain(t)
            | ControlCommand::Rollback(t) => t.clone(),
            ControlCommand::Mark(_) => Target::all(),
        };
        if !self.trains_online() {
            return Err("training.mode is \"off\"".into());
        }
        let scoped = self.config.kind != ScopeKind::Fleet;
        if scoped && target.scope.is_none() && matches!(command, ControlCommand::Rollback(_)) {
            return Err(CommandRefused(format!(
                "rollback needs a scope (one of {})",
                self.scope_names()
            )));
        }
        let chosen: Vec<usize> = (0..self.scopes.len())
            .filter(|&i| target.includes(&self.scopes[i].name))
            .collect();
        if chosen.is_empty() {
            return Err(match &target.scope {
                Some(name) => CommandRefused(format!(
                    "no scope {name:?} (scopes: {})",
                    self.scope_names()
                )),
                None => "no scope has seen a window yet".into(),
            });
        }
        let mut errors = Vec::new();
        for i in chosen.iter().copied() {
            let scope = &mut self.scopes[i];
            match scope.run_command(command, &self.config, &self.metrics) {
                Ok(status) => out.extend(status.map(Output::Status)),
                Err(why) => errors.push(format!("{}: {why}", scope.name)),
            }
        }
        if errors.len() == chosen.len() {
            return Err(CommandRefused(errors.join("; ")));
        }
        for error in errors {
            tracing::warn!(command = command.as_str(), %error, "command refused in a scope");
        }
        Ok(())
    }

    pub(crate) fn scope_names(&self) -> String {
        let names: Vec<&str> = self.scopes.iter().map(|s| &*s.name).collect();
        if names.is_empty() {
            "none yet".into()
        } else {
            names.join(", ")
        }
    }

    /// Saves what the calibrating scopes collected (at shutdown).
    pub(crate) fn save(&self) {
        for scope in &self.scopes {
            if let (None, Some(trainer)) = (&scope.stage, &scope.online) {
                trainer.save();
            }
        }
    }
}

/// Scores batches of windows on a blocking thread (inference is CPU work);
/// a batch is whatever is queued, up to `max_batch`, so a lone window
/// waits for nobody. Each window goes to its model scope; a scope without
/// a model yet hands its windows to its online trainer, and status records
/// say how far it is. Each batch's records are written to `sinks` here, on
/// this thread.
pub(crate) fn score_loop(
    mut scoring: Scoring,
    max_batch: usize,
    mut windows: mpsc::Receiver<Window>,
    sinks: &mut Sinks,
    pending: &PendingModel,
    pulse: &Pulse,
    stop: &watch::Receiver<bool>,
) -> Result<(u64, u64), BackendError> {
    let (mut scored, mut alerts) = (0u64, 0u64);
    let count =
        |out: &[Output], what: fn(&Output) -> bool| out.iter().filter(|o| what(o)).count() as u64;
    let is_window = |o: &Output| matches!(o, Output::Window(_));
    let is_alert = |o: &Output| matches!(o, Output::Alert(_));
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        batch.clear();
        // With online training, poll: a finished model is served (and its
        // status sent), and a command carried out, without waiting for the
        // next window.
        if scoring.trains_online() {
            match windows.try_recv() {
                Ok(window) => batch.push(window),
                Err(mpsc::error::TryRecvError::Empty) => {
                    let mut news = scoring.take_learned()?;
                    scored += count(&news, is_window);
                    alerts += count(&news, is_alert);
                    news.extend(scoring.reread_scopes());
                    news.extend(scoring.run_commands());
                    if !news.is_empty() {
                        sinks.write(&news);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
            while batch.len() < max_batch {
                match windows.try_recv() {
                    Ok(window) => batch.push(window),
                    Err(_) => break,
                }
            }
        } else if windows.blocking_recv_many(&mut batch, max_batch) == 0 {
            break;
        }
        // Taken at once, the batch's room goes back to the queue at once:
        // taken one `try_recv` at a time, each window's room woke the input
        // task, waiting for it when the scorer is the limit (12 % of the
        // daemon with the default model; docs/measured.md, "The scorer's
        // batch taken at once").
        let picked_ms = crate::clock::unix_ms();
        for window in &mut batch {
            window.timeline.picked_ms = picked_ms;
        }
        // A reloaded model takes over between two batches.
        if let Some(new) = pending.lock().unwrap_or_else(|e| e.into_inner()).take() {
            scoring.reload(new.model, &Serving::of(&new.config));
        }
        let mut out = scoring.take_learned()?;
        scored += count(&out, is_window);
        alerts += count(&out, is_alert);
        out.extend(scoring.reread_scopes());
        out.extend(scoring.run_commands());
        for (index, part) in scoring.route(&mut batch) {
            let scope = &mut scoring.scopes[index];
            let scoring_it = scope.stage.is_some();
            let produced = scope.process(&part, &scoring.metrics)?;
            if scoring_it {
                scored += part.len() as u64;
            }
            alerts += count(&produced, is_alert);
            out.extend(produced);
            if let Some(spares) = &scoring.spares {
                spares.give_back(part.into_iter().map(|window| window.data));
            }
        }
        Pulse::beat(&pulse.batches);
        let scored_ms = crate::clock::unix_ms();
        for output in &mut out {
            if let Output::Window(record) = output {
                record.timeline.scored_ms = scored_ms;
            }
        }
        if !out.is_empty() {
            sinks.write(&out);
        }
    }
    let last = scoring.finish_first_trainings(stop)?;
    scored += count(&last, is_window);
    alerts += count(&last, is_alert);
    if !last.is_empty() {
        sinks.write(&last);
    }
    scoring.save();
    Ok((scored, alerts))
}
