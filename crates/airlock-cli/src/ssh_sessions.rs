//! `airlock session play`: replays an SSH session the companion on an SSH
//! host recorded (asciicast v2), at its recorded pace (`--speed` scales it)
//! or without waiting (`--no-wait`). The recording is the session's own
//! terminal output and is written to this terminal as it was recorded,
//! escape sequences included: that is what replaying it means. `airlock
//! show` lists a request's sessions (`sessions`, below).

use std::io::Write;

use airlock_server::api::SshSessionView;
use airlock_session::asciicast::{self, Pace};
use anyhow::{bail, Context};
use clap::Subcommand;

use crate::args::{client, Conn};
use crate::terminal::{one_line, say};

#[derive(Subcommand)]
pub enum SshSessionCmd {
    /// Replay a recorded SSH session (its id is in `airlock show`).
    Play {
        id: String,
        /// How many times faster than recorded (0.5 is half as fast).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Print the output at once, without the recorded pauses.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn run(command: SshSessionCmd) -> anyhow::Result<()> {
    match command {
        SshSessionCmd::Play {
            id,
            speed,
            no_wait,
            conn,
        } => {
            if !(speed.is_finite() && speed > 0.0) {
                bail!("--speed: `{speed}` must be a number above 0");
            }
            let session = client(&conn)?.ssh_session(&id).await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&session)?);
                return Ok(());
            }
            let cast = asciicast::parse(&session.recording)
                .with_context(|| format!("the recording of session `{}`", one_line(&id)))?;
            let pace = if no_wait {
                Pace::NoWaits
            } else {
                Pace::Speed(speed)
            };
            // Pauses block this thread only; the runtime has others.
            tokio::task::block_in_place(|| {
                let stdout = std::io::stdout();
                let mut out = stdout.lock();
                asciicast::play(&cast, &mut out, pace, &mut std::thread::sleep)?;
                out.flush()
            })?;
            if let Some(cut) = &session.session.cut {
                crate::terminal::say_err!("\nnot kept: {}", one_line(cut));
            }
            Ok(())
        }
    }
}

/// `airlock show`: the request's recorded SSH sessions.
pub fn sessions(sessions: &[SshSessionView]) {
    if sessions.is_empty() {
        return;
    }
    say!("ssh sessions (airlock session play ID):");
    for s in sessions {
        say!(
            "  {}  {} to {}  {}@{} from {}  {}  {}  {} bytes{}",
            one_line(&s.id),
            one_line(&s.started_at),
            one_line(&s.ended_at),
            one_line(&s.user),
            one_line(&s.host),
            one_line(&s.client),
            one_line(&s.ending),
            s.command
                .as_deref()
                .map_or_else(|| "shell".to_owned(), |c| format!("`{}`", one_line(c))),
            s.recording_bytes,
            s.cut
                .as_deref()
                .map(|c| format!("; not kept: {}", one_line(c)))
                .unwrap_or_default()
        );
    }
}
