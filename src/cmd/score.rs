//! `accelwatch score`: every window of a recording as JSON lines.

use anyhow::Context;

use crate::cli::ScoreArgs;
use crate::cmd::exit::Failure;
use crate::cmd::offline::{load_config, score_recording};
use crate::model::LoadedModel;
use crate::record::Output;
use crate::sink::jsonl::JsonlSink;
use crate::sink::Sink;

pub fn score(args: ScoreArgs) -> Result<(), Failure> {
    let config = load_config(args.config.as_deref())?;
    let model = LoadedModel::load_with(&args.model, &config.model.backend_options())?;
    let mut sink = match &args.out {
        Some(path) => JsonlSink::new(Box::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => JsonlSink::new(Box::new(std::io::stdout())),
    };
    let (mut windows, mut over, mut alerts) = (0usize, 0usize, 0usize);
    score_recording(model, &config, &args.data, Vec::new(), |_, outputs| {
        for output in outputs {
            match output {
                Output::Window(w) => {
                    windows += 1;
                    over += w.over_threshold as usize;
                }
                Output::Alert(a) => alerts += (a.event == "raise") as usize,
                Output::Status(_) => {}
            }
            sink.write(output).context("writing scores")?;
        }
        Ok(())
    })?;
    sink.flush().context("writing scores")?;
    eprintln!("scored {windows} windows: {over} over the threshold, {alerts} alerts raised");
    Ok(())
}
