//! `vdesk-xpaint`: paints a block on an X display, then repaints it with each colour read from
//! standard input (`RRGGBB` per line), printing `painted RRGGBB <unix-µs> <unix-µs-before>` after each `XSync`: the
//! time after the X server confirmed the paint, then the time read before the request was sent.
//! The stimulus of the browser tests and the latency bench; see the library for the painting.

use std::io::{BufRead, Write};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use vdesk_xpaint::{now_us, parse_colour, Animator, Painter};

#[derive(Parser, Debug)]
#[command(about = "Paint a coloured block on an X display and repaint it on demand")]
struct Args {
    /// X display (defaults to $DISPLAY).
    #[arg(long, env = "DISPLAY")]
    display: String,
    /// The block: X,Y,WIDTH,HEIGHT in screen pixels.
    #[arg(long, default_value = "100,100,200,200")]
    rect: String,
    /// First colour of the block, RRGGBB.
    #[arg(long, default_value = "ff0000")]
    color: String,
    /// Also fill the whole screen (the root window) with this colour first, RRGGBB.
    #[arg(long)]
    background: Option<String>,
    /// Also animate this region (X,Y,WIDTH,HEIGHT) with scrolling bars: a busy screen.
    #[arg(long)]
    busy: Option<String>,
    /// Repaint the block with the next of these colours (RRGGBB,...) on each click on it, printing
    /// `clicked RRGGBB <received-µs> <painted-µs>`: the input-to-photon stimulus.
    #[arg(long, value_delimiter = ',')]
    click_colors: Vec<String>,
    /// Frames per second of the --busy animation.
    #[arg(long, default_value_t = 60)]
    busy_fps: u32,
}

fn parse_rect(flag: &str, s: &str) -> Result<(i16, i16, u16, u16)> {
    let v: Vec<i64> = s
        .split(',')
        .map(|v| v.trim().parse::<i64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("{flag} must be X,Y,WIDTH,HEIGHT"))?;
    let [x, y, w, h] = v[..] else {
        bail!("{flag} must be X,Y,WIDTH,HEIGHT");
    };
    Ok((
        i16::try_from(x)?,
        i16::try_from(y)?,
        u16::try_from(w)?,
        u16::try_from(h)?,
    ))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rect = parse_rect("--rect", &args.rect)?;
    let colour = parse_colour(&args.color).map_err(|e| anyhow!("--color: {e}"))?;
    let background = match &args.background {
        Some(b) => Some(parse_colour(b).map_err(|e| anyhow!("--background: {e}"))?),
        None => None,
    };
    let painter = Painter::new(&args.display, rect, colour, background).map_err(|e| anyhow!(e))?;
    let _busy = match &args.busy {
        Some(r) => Some(
            Animator::start(&args.display, parse_rect("--busy", r)?, args.busy_fps)
                .map_err(|e| anyhow!(e))?,
        ),
        None => None,
    };
    let painter = std::sync::Arc::new(painter);
    if !args.click_colors.is_empty() {
        let colours = args
            .click_colors
            .iter()
            .map(|c| parse_colour(c).map_err(|e| anyhow!("--click-colors: {e}")))
            .collect::<Result<Vec<u32>>>()?;
        let p = painter.clone();
        let next = std::sync::atomic::AtomicUsize::new(0);
        vdesk_xpaint::watch_clicks(&args.display, painter.window(), move |received| {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let c = colours[i % colours.len()];
            let _ = match p.paint(c) {
                Ok(t) => say(&format!("clicked {c:06x} {received} {t}")),
                Err(e) => say(&format!("error {e}")),
            };
        })
        .map_err(|e| anyhow!(e))?;
    }
    say(&format!("ready {}", now_us()))?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match parse_colour(&line).and_then(|c| Ok((c, painter.paint_timed(c)?))) {
            Ok((c, (before, after))) => say(&format!("painted {c:06x} {after} {before}"))?,
            Err(e) => say(&format!("error {e}"))?,
        }
    }
    Ok(())
}

/// One line to stdout, flushed; stdout is locked only for the line (the click thread writes too).
fn say(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}
