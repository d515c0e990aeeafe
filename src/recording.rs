//! CSV recordings: a header row, channel columns by name, an optional
//! device column (one file, many devices), an optional timestamp column in
//! milliseconds, and any other columns (labels, subjects) alongside.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::source::replay::config::CsvColumns;
use crate::window::{WindowSpec, Windower};

/// Keeps the rows whose `column` holds one of `values`.
#[derive(Debug, Clone, PartialEq)]
pub struct RowFilter {
    pub column: String,
    pub values: Vec<String>,
}

impl std::str::FromStr for RowFilter {
    type Err = String;

    /// `COLUMN=V1,V2`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (column, values) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not COLUMN=VALUE[,VALUE...]"))?;
        let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
        if column.trim().is_empty() || values.iter().any(String::is_empty) {
            return Err(format!("{s:?} is not COLUMN=VALUE[,VALUE...]"));
        }
        Ok(Self {
            column: column.trim().to_string(),
            values,
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    pub columns: CsvColumns,
    pub channels: Vec<String>,
    pub sample_rate_hz: f64,
    pub filters: Vec<RowFilter>,
    /// Columns whose text is kept per row (e.g. a label and a subject).
    pub keep: Vec<String>,
}

/// One device's samples, in file order.
#[derive(Debug, Clone, Default)]
pub struct Stream {
    pub device: String,
    pub t_ms: Vec<f64>,
    /// `t_ms.len() * channels`, time-major.
    pub values: Vec<f32>,
    /// For each kept column, per row, an index into [`Recording::levels`].
    pub kept: Vec<Vec<u32>>,
}

#[derive(Debug, Clone, Default)]
pub struct Recording {
    pub channels: Vec<String>,
    pub streams: Vec<Stream>,
    /// For each kept column, its distinct values in order of appearance.
    pub levels: Vec<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("{path}: {cause}")]
    Csv { path: PathBuf, cause: csv::Error },
    #[error("{path}: no column {column:?} (the header has: {header})")]
    MissingColumn {
        path: PathBuf,
        column: String,
        header: String,
    },
    #[error("{path}, line {line}, column {column:?}: {value:?} is not a finite number")]
    BadValue {
        path: PathBuf,
        line: u64,
        column: String,
        value: String,
    },
    #[error("{path}: no rows{}", if *.filtered { " match the filters" } else { "" })]
    Empty { path: PathBuf, filtered: bool },
}

impl Recording {
    /// The windows of a recording whose devices (one stream each) are
    /// named by `device_column` and timed by `t_ms`, read with `input`'s
    /// channels and rate and windowed as `window` says, as the pipeline
    /// would.
    pub fn window_set_of(
        path: &Path,
        device_column: &str,
        input: &crate::source::config::InputConfig,
        window: &crate::window::WindowConfig,
    ) -> Result<crate::model::train::WindowSet, RecordingError> {
        let options = ReadOptions {
            columns: CsvColumns {
                device_column: device_column.into(),
                time_column: "t_ms".into(),
            },
            channels: input.channels.clone(),
            sample_rate_hz: input.sample_rate_hz,
            ..Default::default()
        };
        let recording = Self::read(path, &options)?;
        Ok(recording.window_set(WindowSpec::new(
            window,
            input.channels.len(),
            input.sample_rate_hz,
        )))
    }

    pub fn read(path: &Path, options: &ReadOptions) -> Result<Recording, RecordingError> {
        let csv_error = |cause| RecordingError::Csv {
            path: path.to_path_buf(),
            cause,
        };
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_path(path)
            .map_err(csv_error)?;
        let header = reader.headers().map_err(csv_error)?.clone();
        let position = |name: &str| header.iter().position(|h| h == name);
        let require = |name: &str| {
            position(name).ok_or_else(|| RecordingError::MissingColumn {
                path: path.to_path_buf(),
                column: name.to_string(),
                header: header.iter().collect::<Vec<_>>().join(","),
            })
        };
        let channel_columns = options
            .channels
            .iter()
            .map(|c| require(c))
            .collect::<Result<Vec<_>, _>>()?;
        let kept_columns = options
            .keep
            .iter()
            .map(|c| require(c))
            .collect::<Result<Vec<_>, _>>()?;
        let filters = options
            .filters
            .iter()
            .map(|f| Ok((require(&f.column)?, &f.values)))
            .collect::<Result<Vec<_>, RecordingError>>()?;
        let device_column = position(&options.columns.device_column);
        let time_column = position(&options.columns.time_column);
        let default_device = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "replay".into());
        let interval = 1000.0 / options.sample_rate_hz;

        let mut recording = Recording {
            channels: options.channels.clone(),
            streams: Vec::new(),
            levels: vec![Vec::new(); kept_columns.len()],
        };
        let mut level_index: Vec<HashMap<String, u32>> = vec![HashMap::new(); kept_columns.len()];
        let mut stream_index: HashMap<String, usize> = HashMap::new();
        let mut any_row = false;
        let mut record = csv::StringRecord::new();
        while reader.read_record(&mut record).map_err(csv_error)? {
            any_row = true;
            if !filters
                .iter()
                .all(|(col, values)| values.iter().any(|v| v == &record[*col]))
            {
                continue;
            }
            let line = record.position().map_or(0, |p| p.line());
            let number = |col: usize, name: &str| -> Result<f64, RecordingError> {
                let text = &record[col];
                text.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| RecordingError::BadValue {
                        path: path.to_path_buf(),
                        line,
                        column: name.to_string(),
                        value: text.to_string(),
                    })
            };
            let device = device_column.map_or(default_device.as_str(), |c| &record[c]);
            let index = match stream_index.get(device) {
                Some(i) => *i,
                None => {
                    stream_index.insert(device.to_string(), recording.streams.len());
                    recording.streams.push(Stream {
                        device: device.to_string(),
                        kept: vec![Vec::new(); kept_columns.len()],
                        ..Default::default()
                    });
                    recording.streams.len() - 1
                }
            };
            let t = match time_column {
                Some(c) => number(c, &options.columns.time_column)?,
                None => recording.streams[index].t_ms.len() as f64 * interval,
            };
            let stream = &mut recording.streams[index];
            for (col, name) in channel_columns.iter().zip(&options.channels) {
                stream.values.push(number(*col, name)? as f32);
            }
            stream.t_ms.push(t);
            for (k, col) in kept_columns.iter().enumerate() {
                let text = &record[*col];
                let level = *level_index[k].entry(text.to_string()).or_insert_with(|| {
                    recording.levels[k].push(text.to_string());
                    (recording.levels[k].len() - 1) as u32
                });
                stream.kept[k].push(level);
            }
        }
        if recording.streams.is_empty() {
            return Err(RecordingError::Empty {
                path: path.to_path_buf(),
                filtered: any_row,
            });
        }
        Ok(recording)
    }

    pub fn rows(&self) -> usize {
        self.streams.iter().map(|s| s.t_ms.len()).sum()
    }

    /// Cuts every stream into windows with the same windower the daemon
    /// uses. Each window carries, for every kept column, the value most of
    /// its samples have.
    pub fn windows(&self, spec: WindowSpec) -> Vec<RecordedWindow> {
        let c = self.channels.len();
        let mut out = Vec::new();
        for (s, stream) in self.streams.iter().enumerate() {
            let mut windower = Windower::new(WindowSpec {
                max_devices: 1,
                ..spec
            });
            let mut accepted: Vec<usize> = Vec::new();
            for (i, t) in stream.t_ms.iter().enumerate() {
                let Ok(pushed) = windower.push(
                    &stream.device,
                    Some(*t),
                    0.0,
                    &stream.values[i * c..(i + 1) * c],
                ) else {
                    continue;
                };
                if pushed.gap_restart {
                    accepted.clear();
                }
                accepted.push(i);
                if let Some(window) = pushed.window {
                    let rows = &accepted[accepted.len() - spec.size..];
                    let kept = stream
                        .kept
                        .iter()
                        .map(|column| majority(rows.iter().map(|r| column[*r])))
                        .collect();
                    out.push(RecordedWindow {
                        stream: s,
                        window,
                        kept,
                    });
                }
            }
        }
        out
    }
}

impl Recording {
    /// Every window of the recording, tagged with its stream, ready for
    /// training.
    pub fn window_set(&self, spec: WindowSpec) -> crate::model::train::WindowSet {
        let mut set = crate::model::train::WindowSet::new(spec.size * spec.channels);
        for w in self.windows(spec) {
            set.push(w.stream, &w.window.data);
        }
        set
    }
}

#[derive(Debug, Clone)]
pub struct RecordedWindow {
    pub stream: usize,
    pub window: crate::window::Window,
    pub kept: Vec<u32>,
}

fn majority(levels: impl Iterator<Item = u32>) -> u32 {
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for level in levels {
        *counts.entry(level).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(level, count)| (*count, std::cmp::Reverse(*level)))
        .map_or(0, |(l, _)| l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn options(channels: &[&str]) -> ReadOptions {
        ReadOptions {
            columns: CsvColumns::default(),
            channels: channels.iter().map(|s| s.to_string()).collect(),
            sample_rate_hz: 50.0,
            ..Default::default()
        }
    }

    #[test]
    fn reads_devices_times_channels_and_labels() {
        let f = write(
            "device,t_ms,label,ax,ay,az,extra\na,0,x,1,2,3,q\nb,0,y,4,5,6,q\na,20,y,7,8,9,q\n",
        );
        let mut opts = options(&["az", "ax"]);
        opts.keep = vec!["label".into()];
        let r = Recording::read(f.path(), &opts).unwrap();
        assert_eq!(r.streams.len(), 2);
        assert_eq!(r.streams[0].values, vec![3.0, 1.0, 9.0, 7.0]);
        assert_eq!(r.streams[0].t_ms, vec![0.0, 20.0]);
        assert_eq!(r.levels[0], vec!["x", "y"]);
        assert_eq!(r.streams[0].kept[0], vec![0, 1]);
    }

    #[test]
    fn without_device_and_time_columns() {
        let f = write("ax,ay,az\n1,2,3\n4,5,6\n");
        let r = Recording::read(f.path(), &options(&["ax", "ay", "az"])).unwrap();
        assert_eq!(r.streams.len(), 1);
        assert_eq!(r.streams[0].t_ms, vec![0.0, 20.0]);
    }

    #[test]
    fn filters_keep_matching_rows() {
        let f = write("ex,ax\nPEN,1\nABD,2\nPEN,3\nROW,4\n");
        let mut opts = options(&["ax"]);
        opts.filters = vec!["ex=PEN,ROW".parse().unwrap()];
        let r = Recording::read(f.path(), &opts).unwrap();
        assert_eq!(r.streams[0].values, vec![1.0, 3.0, 4.0]);
        opts.filters = vec!["ex=NONE".parse().unwrap()];
        let err = Recording::read(f.path(), &opts).unwrap_err().to_string();
        assert!(err.contains("no rows match the filters"), "{err}");
        assert!("nonsense".parse::<RowFilter>().is_err());
    }

    #[test]
    fn errors_name_the_place() {
        let f = write("ax,ay\n1,2\n");
        let err = Recording::read(f.path(), &options(&["ax", "az"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no column \"az\"") && err.contains("ax,ay"),
            "{err}"
        );
        let f = write("ax\n1\nabc\n");
        let err = Recording::read(f.path(), &options(&["ax"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3") && err.contains("\"abc\""), "{err}");
    }

    #[test]
    fn windows_carry_the_majority_label() {
        let mut text = String::from("t_ms,label,ax\n");
        for i in 0..8 {
            text += &format!("{},{},{i}\n", i * 20, if i < 3 { "a" } else { "b" });
        }
        let f = write(&text);
        let mut opts = options(&["ax"]);
        opts.keep = vec!["label".into()];
        let r = Recording::read(f.path(), &opts).unwrap();
        let spec = WindowSpec {
            size: 4,
            hop: 2,
            channels: 1,
            max_gap_ms: 1000.0,
            max_devices: 1,
            interval_ms: 20.0,
        };
        let windows = r.windows(spec);
        let labels: Vec<&str> = windows
            .iter()
            .map(|w| r.levels[0][w.kept[0] as usize].as_str())
            .collect();
        assert_eq!(labels, vec!["a", "b", "b"]);
    }
}
