//! `airlock policy validate|test DIR`: check a folder of Cedar policies
//! before it takes effect, and run the test cases written next to them.

use std::path::Path;

use airlock_policy::{run_tests, Directory, PolicySet};
use anyhow::{bail, Context};

/// Reads every `*.cedar` file of `dir`, in name order, as (file name, text).
fn read_sources(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the policy folder `{}`", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        bail!("`{}` holds no *.cedar files", dir.display());
    }
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("cannot read `{}`", p.display()))?;
            Ok((p.display().to_string(), text))
        })
        .collect()
}

/// Loads and validates against the schema, printing every error.
pub fn load(dir: &Path) -> anyhow::Result<PolicySet> {
    match PolicySet::load(&read_sources(dir)?) {
        Ok(set) => {
            for warning in set.warnings() {
                eprintln!("warning: {warning}");
            }
            Ok(set)
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            bail!(
                "{} error(s) in the policies of `{}`",
                errors.len(),
                dir.display()
            )
        }
    }
}

pub fn validate(dir: &Path) -> anyhow::Result<()> {
    let set = load(dir)?;
    println!(
        "{}: {} policies valid against the Airlock schema (version {})",
        dir.display(),
        set.policy_ids().count(),
        set.version()
    );
    Ok(())
}

pub fn test(dir: &Path) -> anyhow::Result<()> {
    let set = load(dir)?;
    let cases_path = dir.join("tests.toml");
    let cases = std::fs::read_to_string(&cases_path)
        .with_context(|| format!("cannot read `{}`", cases_path.display()))?;
    let report = run_tests(&set, &Directory::default(), &cases);
    for error in &report.errors {
        eprintln!("{}: {error}", cases_path.display());
    }
    for case in &report.cases {
        if case.passed() {
            println!("ok    {} (line {})", case.name, case.line);
        } else {
            println!("FAIL  {} (line {})", case.name, case.line);
            for f in &case.failures {
                println!("      {f}");
            }
        }
    }
    println!("{} passed, {} failed", report.passed(), report.failed());
    if !report.all_passed() {
        bail!("policy tests in `{}` failed", cases_path.display());
    }
    Ok(())
}
