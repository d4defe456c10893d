//! `cascade evaluate`: plan one inventory against catalog files.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use cascade_core::import::{self, CatalogImport, Fragments};
use cascade_core::inventory::Inventory;
use cascade_core::planner::{Plan, PlanItem};
use cascade_core::{Catalog, Planner, Update};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A catalog file or directory: MSRC CVRF XML, WSUS update XML, a wsusscn2.cab
    /// or its extracted package.xml (with the fragment folders beside it), Microsoft Update
    /// Catalog JSON or Cascade catalog JSON. Repeat for several; every update
    /// in them counts as approved.
    #[arg(long = "catalog", required = true, value_name = "FILE")]
    catalogs: Vec<PathBuf>,
    /// The computer's inventory: Cascade inventory JSON (with its software
    /// list), systeminfo output, a wmic qfe / Get-HotFix list, or a regedit
    /// export of the keys installed software is registered under. Repeat to
    /// merge, fact by fact (systeminfo plus its qfe list and its software).
    #[arg(long = "inventory", required = true, value_name = "FILE")]
    inventories: Vec<PathBuf>,
    /// Windows 7 to 8.1 and their servers: plan monthly rollups or
    /// security-only updates.
    #[arg(long, value_enum, default_value = "rollup")]
    track: TrackArg,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum TrackArg {
    Rollup,
    SecurityOnly,
}

/// Fragment folders of an extracted wsusscn2 catalogue: every `c/`, `x/`
/// and `l/en/` below the folders next to package.xml.
#[derive(Debug)]
struct FsFragments {
    roots: Vec<PathBuf>,
}

impl FsFragments {
    fn for_package(package: &Path) -> FsFragments {
        let parent = package.parent().unwrap_or(Path::new("."));
        // An extracted cab: .../x_package.cab/package.xml with siblings x_package2.cab/...
        let base = if parent.extension().is_some_and(|e| e.eq_ignore_ascii_case("cab")) {
            parent.parent().unwrap_or(parent)
        } else {
            parent
        };
        let mut roots = vec![base.to_path_buf()];
        if let Ok(entries) = std::fs::read_dir(base) {
            let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
            dirs.sort();
            roots.extend(dirs);
        }
        FsFragments { roots }
    }
}

impl Fragments for FsFragments {
    fn fragment(&self, kind: &str, revision_id: u64) -> Option<Vec<u8>> {
        self.roots
            .iter()
            .find_map(|r| std::fs::read(r.join(kind).join(revision_id.to_string())).ok())
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Imports one catalog path (a file, or every file of a directory).
pub fn import_catalog_path(path: &Path) -> anyhow::Result<Vec<CatalogImport>> {
    if path.is_dir() {
        let mut files = Vec::new();
        collect_files(path, &mut files)?;
        let package = files
            .iter()
            .find(|f| f.file_name().is_some_and(|n| n == "package.xml"))
            .cloned();
        if let Some(package) = package {
            return Ok(vec![import_catalog_file(&package)?]);
        }
        let mut out = Vec::new();
        // winget manifests: the files of a package version are read together.
        let mut winget: Vec<(String, String)> = Vec::new();
        for f in files {
            let bytes = read(&f)?;
            match import::detect_catalog(&bytes) {
                Some(import::CatalogFormat::Winget) => {
                    let text = String::from_utf8(bytes).with_context(|| format!("{}: not UTF-8", f.display()))?;
                    winget.push((f.display().to_string(), text));
                }
                Some(_) => out.push(import_catalog_file(&f)?),
                None => {}
            }
        }
        if !winget.is_empty() {
            out.push(import::import_winget(&winget, &[])?);
        }
        if out.is_empty() {
            bail!("{}: no catalog files in this directory", path.display());
        }
        return Ok(out);
    }
    Ok(vec![import_catalog_file(path)?])
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read directory {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect_files(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

fn import_catalog_file(path: &Path) -> anyhow::Result<CatalogImport> {
    let bytes = read(path)?;
    if crate::cabinet::is_cabinet(&bytes) {
        let (package, fragments) = crate::cabinet::open(path)?;
        let name = format!("{} (package.xml)", path.display());
        return Ok(import::import_catalog(&name, &package, &fragments)?);
    }
    let fragments = FsFragments::for_package(path);
    Ok(import::import_catalog(&path.display().to_string(), &bytes, &fragments)?)
}

/// Reads and merges the inventory files; the second value lists the facts
/// they disagree on.
pub fn load_inventory(paths: &[PathBuf]) -> anyhow::Result<(Inventory, Vec<String>)> {
    let mut merged: Option<Inventory> = None;
    let mut conflicts = Vec::new();
    for path in paths {
        let bytes = read(path)?;
        let (_, inv) = import::import_inventory(&path.display().to_string(), &bytes)?;
        match &mut merged {
            None => merged = Some(inv),
            Some(m) => conflicts.extend(m.merge(inv).into_iter().map(|c| format!("{}: {c}", path.display()))),
        }
    }
    let inv = merged.context("no inventory given")?;
    if inv.os.version.is_none() && inv.os.product.is_none() {
        bail!(
            "the inventory says nothing about the operating system (a hotfix list alone is not enough; give systeminfo output or inventory JSON with it)"
        );
    }
    Ok((inv, conflicts))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut updates: Vec<Update> = Vec::new();
    let mut notes = Vec::new();
    for path in &args.catalogs {
        for imported in import_catalog_path(path)? {
            if !imported.skipped.is_empty() {
                notes.push(format!(
                    "{}: {} records passed over",
                    path.display(),
                    imported.skipped.len()
                ));
            }
            updates.extend(imported.updates);
        }
    }
    let (inventory, conflicts) = load_inventory(&args.inventories)?;
    notes.extend(conflicts.into_iter().map(|c| format!("inventory: {c}")));
    let catalog = Arc::new(Catalog::new(updates));
    for d in catalog.diagnostics() {
        notes.push(format!("catalog: {d}"));
    }
    let track = match args.track {
        TrackArg::Rollup => cascade_core::update::Track::Rollup,
        TrackArg::SecurityOnly => cascade_core::update::Track::SecurityOnly,
    };
    let planner = Planner::with_track(catalog.clone(), track);
    let plan = planner.plan(&inventory);
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, plan.as_ref())?;
        writeln!(out)?;
    } else {
        print_table(&mut out, &inventory, &catalog, &plan)?;
    }
    for n in notes {
        eprintln!("note: {n}");
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(out: &mut impl Write, inv: &Inventory, catalog: &Catalog, plan: &Plan) -> std::io::Result<()> {
    let os = &inv.os;
    let mut describe = vec![os.product.clone().unwrap_or_else(|| os.name.clone())];
    describe.extend(os.release.iter().map(|r| format!("version {r}")));
    describe.extend(os.edition.clone());
    describe.extend(os.arch.clone());
    if let Some(v) = &os.version {
        describe.push(format!("build {v}"));
    }
    if let Some(sp) = os.service_pack.filter(|sp| *sp > 0) {
        describe.push(format!("SP{sp}"));
    }
    writeln!(
        out,
        "Computer {}: {}",
        inv.computer.as_deref().unwrap_or("(unnamed)"),
        describe.join(", ")
    )?;
    writeln!(
        out,
        "Catalog: {} updates; {} installed updates listed on the computer",
        catalog.len(),
        inv.installed_updates.len()
    )?;
    writeln!(out)?;
    if plan.required.is_empty() {
        writeln!(out, "Nothing required.")?;
    } else {
        writeln!(out, "Required, in install order:")?;
        let rows: Vec<[String; 5]> = plan
            .required
            .iter()
            .enumerate()
            .map(|(n, e)| {
                let severity = match &e.custom_severity {
                    Some(c) => format!("{} ({c})", e.severity),
                    None => e.severity.to_string(),
                };
                [
                    (n + 1).to_string(),
                    e.id.to_string(),
                    severity,
                    e.restart.to_owned(),
                    e.title.to_string(),
                ]
            })
            .collect();
        let header = [
            "#".to_owned(),
            "Update".to_owned(),
            "Severity".to_owned(),
            "Restart".to_owned(),
            "Title".to_owned(),
        ];
        let mut widths = [0usize; 4];
        for row in std::iter::once(&header).chain(&rows) {
            for (w, cell) in widths.iter_mut().zip(row.iter()) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |row: &[String; 5]| {
            format!(
                "  {:>w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {}",
                row[0],
                row[1],
                row[2],
                row[3],
                row[4],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3]
            )
        };
        writeln!(out, "{}", line(&header))?;
        for (row, entry) in rows.iter().zip(&plan.required) {
            writeln!(out, "{}", line(row))?;
            writeln!(out, "  {:>w$}  why: {}", "", entry.reason, w = widths[0])?;
            if !entry.after.is_empty() {
                let after: Vec<String> = entry.after.iter().map(ToString::to_string).collect();
                writeln!(out, "  {:>w$}  after: {}", "", after.join(", "), w = widths[0])?;
            }
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "Installed: {}   Superseded: {}   Not applicable: {}   Unknown: {}",
        plan.installed.len(),
        plan.superseded.len(),
        plan.not_applicable,
        plan.unknown.len()
    )?;
    let list = |out: &mut dyn Write, title: &str, items: &[PlanItem], limit: usize| -> std::io::Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        writeln!(out, "\n{title}:")?;
        for item in items.iter().take(limit) {
            writeln!(out, "  {:<12} {}", item.id.to_string(), item.reason)?;
        }
        if items.len() > limit {
            writeln!(out, "  ... and {} more (--json lists them all)", items.len() - limit)?;
        }
        Ok(())
    };
    list(out, "Superseded", &plan.superseded, 20)?;
    list(out, "Unknown", &plan.unknown, 20)?;
    Ok(())
}
