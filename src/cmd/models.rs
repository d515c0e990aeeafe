//! `accelwatch models list|rollback`: a model directory's versions.

use crate::cmd::exit::{failure, Failure};
use crate::model::LoadedModel;
use crate::EX_CONFIG;

/// One model directory's versions, the served one marked with `*`.
pub fn list_versions(
    store: &crate::scope::store::ModelStore,
) -> Result<(), crate::scope::store::StoreError> {
    let current = store.current()?;
    let versions = store.versions()?;
    if versions.is_empty() {
        println!("{}: no model yet", store.dir().display());
    }
    for version in versions {
        let mark = if Some(&version) == current.as_ref() {
            "*"
        } else {
            " "
        };
        let detail = match LoadedModel::load(&version.path) {
            Ok(model) => format!(
                "{} {}, threshold {:.4}",
                model.meta.id, model.meta.variant, model.meta.threshold
            ),
            Err(error) => format!("unreadable: {error}"),
        };
        println!("{mark} {}  {detail}", version.name);
    }
    Ok(())
}

pub fn models(command: crate::cli::ModelsCommand) -> Result<(), Failure> {
    use crate::cli::ModelsCommand;
    use crate::scope::dirs;
    use crate::scope::rules::FLEET;
    use crate::scope::store::ModelStore;
    let config_error = |e: crate::scope::store::StoreError| failure(EX_CONFIG, e.into());
    match command {
        ModelsCommand::List { dir, scope } => {
            let scopes: Vec<String> = match scope {
                Some(scope) => vec![scope],
                None => std::iter::once(FLEET.to_string())
                    .chain(dirs::existing(&dir).into_iter().map(|(name, _)| name))
                    .collect(),
            };
            let headed = scopes.len() > 1;
            for name in scopes {
                let scope_dir = dirs::scope_dir(&dir, &name);
                if name != FLEET && !scope_dir.is_dir() {
                    // Listing must not create the directory of a misspelt scope.
                    return Err(failure(
                        EX_CONFIG,
                        anyhow::anyhow!("{}: no scope {name:?} there", dir.display()),
                    ));
                }
                let store = ModelStore::open(&scope_dir).map_err(config_error)?;
                if headed {
                    println!("{name}:");
                }
                list_versions(&store).map_err(config_error)?;
            }
            Ok(())
        }
        ModelsCommand::Rollback { dir, scope, to } => {
            let store = ModelStore::open(&dirs::scope_dir(&dir, &scope)).map_err(config_error)?;
            let version = match to {
                Some(name) => {
                    store.set_current(&name).map_err(config_error)?;
                    name
                }
                None => store.rollback().map_err(config_error)?.name,
            };
            println!(
                "{}: serving {version} from the next reload",
                store.dir().display()
            );
            Ok(())
        }
    }
}
