//! The results of a check as `results.csv`, `check.json` and a self-contained `report.html`
//! (thumbnails inline, no scripts or files from elsewhere), most doubtful records first.

use std::fmt::Write as _;
use std::path::Path;

use base64::Engine;

use super::{CheckResults, CheckedRecord, Verdict};
use crate::Result;
use crate::files::{self, csv_field};
use crate::names::{Level, Match};

/// Writes the three files into `dir`.
pub fn write(results: &CheckResults, dir: &Path) -> Result<()> {
    files::create_dir(dir)?;
    files::write_atomic(&dir.join("results.csv"), csv(&results.records).as_bytes())?;
    files::write_json(&dir.join("check.json"), results)?;
    files::write_atomic(&dir.join("report.html"), html(results).as_bytes())
}

/// The name as the volunteer wrote it and, when it was not the scientific name itself, what
/// it was understood as.
fn claimed_cell(r: &CheckedRecord) -> String {
    let written = escape(&r.record.claimed);
    match &r.understood {
        Some(u) if crate::names::key(&u.name) != crate::names::key(&r.record.claimed) => {
            let how = match (u.level, u.how) {
                (Level::Genus, _) => "genus",
                (_, Match::Dutch) => "Dutch name",
                (_, Match::English) => "English name",
                (_, Match::Synonym) => "synonym",
                (_, Match::Binomial) => "species",
                (_, Match::Scientific | Match::Genus) => "scientific name",
            };
            format!(
                "{written}<br><small>= <i>{}</i> ({how})</small>",
                escape(&u.name)
            )
        }
        _ => written,
    }
}

/// One line per record, in the report's order.
pub fn csv(records: &[CheckedRecord]) -> String {
    let mut s = String::from(
        "rank,id,photo,photos,photos_used,claimed,understood_as,verdict,predicted,claimed_probability,image_claimed_probability,doubt,top_species,top_probability,unknown_score,date,latitude,longitude,flags,context_warnings,error\n",
    );
    for (i, r) in records.iter().enumerate() {
        let predicted = match &r.verdict {
            Some(Verdict::Disagrees { predicted }) => predicted.as_str(),
            _ => "",
        };
        let (top, top_p) = r
            .ranking
            .first()
            .map_or((String::new(), String::new()), |t| {
                (t.species.clone(), format!("{:.4}", t.probability))
            });
        let number = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
        let context = &r.record.context;
        let flags: Vec<&str> = r.flags.iter().map(|f| f.label()).collect();
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            i + 1,
            csv_field(&r.record.id),
            csv_field(&r.record.photos.join("|")),
            r.record.photos.len(),
            r.photos.iter().filter(|p| p.used).count(),
            csv_field(&r.record.claimed),
            csv_field(r.understood.as_ref().map_or("", |u| u.name.as_str())),
            r.verdict_label(),
            csv_field(predicted),
            r.claimed_probability
                .map_or(String::new(), |p| format!("{p:.4}")),
            r.image_claimed_probability
                .map_or(String::new(), |p| format!("{p:.4}")),
            if r.error.is_some() {
                String::new()
            } else {
                format!("{:.4}", r.doubt)
            },
            csv_field(&top),
            top_p,
            r.novelty
                .map_or(String::new(), |n| format!("{:.4}", n.score)),
            context.date.map_or(String::new(), |d| d.to_string()),
            number(context.latitude),
            number(context.longitude),
            csv_field(&flags.join("; ")),
            csv_field(&r.record.context_warnings.join("; ")),
            csv_field(r.error.as_deref().unwrap_or(""))
        );
    }
    s
}

/// An inline JPEG.
fn image(jpeg: &[u8], record: &str) -> String {
    format!(
        "<img src=\"data:image/jpeg;base64,{}\" alt=\"photo of record {}\">",
        base64::engine::general_purpose::STANDARD.encode(jpeg),
        escape(record)
    )
}

/// Each photo of a record with several, captioned with its own answer; the photos the verdict
/// left out (they show no known species, or could not be read) are dimmed.
fn every_photo(r: &CheckedRecord) -> String {
    r.photos
        .iter()
        .map(|p| {
            let answer = match (&p.error, p.novelty, p.ranking.first()) {
                (Some(e), ..) => format!("not read: {}", escape(e)),
                (None, Some(n), _) if n.unknown => "no species the model knows".to_string(),
                (None, _, Some(top)) => format!("{} {:.2}", escape(&top.species), top.probability),
                _ => String::new(),
            };
            format!(
                "<figure class=\"photo{}\">{}<figcaption>{answer}</figcaption></figure>",
                if p.used { "" } else { " unused" },
                p.thumbnail
                    .as_ref()
                    .map_or(String::new(), |jpeg| image(jpeg, &r.record.id)),
            )
        })
        .collect()
}

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}\
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:middle}th{background:#f3f3f3}\
.agrees{background:#d9f2d9}.disagrees{background:#f8d0d0}.uncertain{background:#fff1c2}.unknown{background:#e2e2f5}.stranger{background:#f3d9f5}.error{background:#eee}\
.bar{display:inline-block;height:10px;background:#4a7bd0;margin-right:6px}.p{font-size:90%;white-space:nowrap}img{display:block}\
small{display:block;max-width:14em;word-break:break-all;color:#555}.alone{color:#666}\
figure.photo{display:inline-block;margin:0 4px 4px 0;font-size:80%}figure.unused{opacity:.45}\
.flag{font-weight:bold;color:#a04000}";

fn class(r: &CheckedRecord) -> &'static str {
    match &r.verdict {
        Some(Verdict::Agrees) => "agrees",
        Some(Verdict::Disagrees { .. }) => "disagrees",
        Some(Verdict::Uncertain) => "uncertain",
        Some(Verdict::UnknownSpecies) => "unknown",
        Some(Verdict::Unknown) => "stranger",
        None => "error",
    }
}

/// The reviewer's report.
pub fn html(results: &CheckResults) -> String {
    let t = &results.totals;
    let mut s = String::new();
    let _ = write!(
        s,
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>vlinder check: {}</title><style>{STYLE}</style></head><body>",
        escape(&results.config.input.records.to_string_lossy())
    );
    let _ = write!(
        s,
        "<h1>Records to review</h1><p>{} records from <code>{}</code>, checked with the model in <code>{}</code>; \
         agrees at a probability of the claimed species of at least {}, disagrees at {} or less{}. Most doubtful first.</p>",
        t.records,
        escape(&results.config.input.records.to_string_lossy()),
        escape(&results.config.input.model.to_string_lossy()),
        results.config.input.thresholds.agree,
        results.config.input.thresholds.disagree,
        results.temperature.map_or(String::new(), |t| format!(
            "; probabilities calibrated (temperature {t:.2})"
        ))
    );
    let _ = write!(
        s,
        "<p>{}</p>",
        match &results.novelty {
            Ok(t) => format!(
                "A photo whose unknown-ness score is above {t:.2} is <b>unknown</b>: it shows none of the species this model knows, whatever its probabilities; the ranking is still shown."
            ),
            Err(why) => format!("This model cannot say <b>unknown</b>: {}", escape(why)),
        }
    );
    if let Some(source) = &results.prior {
        let _ = write!(
            s,
            "<p>Records with a date or place are judged by the photo together with a prior learned from {}; \
             the photo alone's probabilities are shown beside. A claimed species with under {:.1}% of its records \
             in the record's month or latitude band is flagged, whatever the photo shows.</p>",
            escape(source),
            100.0 * results.config.input.thresholds.rare_below
        );
        let flagged: Vec<String> = t
            .by_flag
            .iter()
            .map(|(flag, n)| format!("{n} {}", escape(flag)))
            .collect();
        let _ = write!(
            s,
            "<p>Flagged: {}.</p>",
            if flagged.is_empty() {
                "none".to_string()
            } else {
                flagged.join(", ")
            }
        );
    }
    let verdicts = [
        "disagrees",
        "unknown",
        "uncertain",
        "unknown species",
        "agrees",
        "error",
    ];
    if !results.unresolved_names.is_empty() {
        s.push_str(
            "<h2>Names the model does not know</h2><p>These claimed names are none of the model's species, so their records are <b>unknown species</b>. Add them to a names file (<code>--names</code>) if they are another way of writing one.</p><table><tr><th>name</th><th>records</th><th>closest known name</th></tr>",
        );
        for u in &results.unresolved_names {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&u.name),
                u.records,
                escape(u.closest.as_deref().unwrap_or("-"))
            );
        }
        s.push_str("</table>");
    }
    s.push_str("<h2>Totals</h2><table><tr><th>claimed species</th>");
    for v in verdicts {
        let _ = write!(s, "<th>{v}</th>");
    }
    s.push_str("</tr>");
    let mut rows: Vec<(String, &std::collections::BTreeMap<String, usize>)> = t
        .by_claimed_species
        .iter()
        .map(|(k, v)| (escape(k), v))
        .collect();
    rows.push(("<b>all</b>".to_string(), &t.by_verdict));
    for (name, counts) in rows {
        let _ = write!(s, "<tr><td>{name}</td>");
        for v in verdicts {
            let _ = write!(s, "<td>{}</td>", counts.get(v).copied().unwrap_or(0));
        }
        s.push_str("</tr>");
    }
    s.push_str("</table><h2>Records</h2><table><tr><th>#</th><th>photo</th><th>id</th><th>claimed</th><th>verdict</th><th>doubt</th><th>probabilities</th></tr>");
    for (i, r) in results.records.iter().enumerate() {
        let verdict = match (&r.verdict, &r.error) {
            (Some(Verdict::Disagrees { predicted }), _) => {
                format!("disagrees: looks like <b>{}</b>", escape(predicted))
            }
            (Some(Verdict::Unknown), _) => {
                let n = r.novelty.expect("an unknown photo has its score");
                format!(
                    "unknown: <b>not one of the species this model knows</b> (unknown-ness {:.2}, threshold {:.2})",
                    n.score, n.threshold
                )
            }
            (Some(_), _) => r.verdict_label(),
            (None, Some(e)) => format!("error: {}", escape(e)),
            (None, None) => "error".to_string(),
        };
        let thumb = if r.photos.len() > 1 {
            every_photo(r)
        } else {
            r.thumbnail
                .as_ref()
                .map_or(String::new(), |jpeg| image(jpeg, &r.record.id))
        };
        let mut probs: String = r
            .ranking
            .iter()
            .map(|p| {
                let photo_alone = r
                    .image_ranking
                    .iter()
                    .find(|i| i.species == p.species)
                    .map_or(String::new(), |i| {
                        format!(" <span class=alone>(photo alone {:.3})</span>", i.probability)
                    });
                format!(
                    "<div class=p><span class=bar style=\"width:{:.0}px\"></span>{} {:.3}{photo_alone}</div>",
                    p.probability * 120.0,
                    escape(&p.species),
                    p.probability
                )
            })
            .collect();
        let c = &r.record.context;
        if let Some(date) = c.date {
            let _ = write!(probs, "<small>seen {date}</small>");
        }
        if let (Some(lat), Some(lon)) = (c.latitude, c.longitude) {
            let _ = write!(probs, "<small>at {lat:.3}, {lon:.3}</small>");
        }
        for flag in &r.flags {
            let _ = write!(probs, "<div class=flag>{}</div>", escape(&flag.explain()));
        }
        for warning in &r.record.context_warnings {
            let _ = write!(probs, "<small>{}</small>", escape(warning));
        }
        let _ = write!(
            s,
            "<tr class={}><td>{}</td><td>{thumb}<small>{}</small></td><td>{}</td><td>{}</td><td>{verdict}</td><td>{}</td><td>{probs}</td></tr>",
            class(r),
            i + 1,
            escape(&r.record.photos.join(" | ")),
            escape(&r.record.id),
            claimed_cell(r),
            if r.error.is_some() {
                String::new()
            } else {
                format!("{:.3}", r.doubt)
            },
        );
    }
    s.push_str("</table></body></html>\n");
    s
}
