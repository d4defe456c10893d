//! Running an update's installer: its command with the content files in
//! place, under a timeout, its exit code read through the update's map.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use cascade_core::update::{ExitMeaning, InstallCommand};
use tokio::io::AsyncReadExt;

/// What one run of an installer came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The exit code; a process killed by signal N gives -N, one that could
    /// not start -1, a timeout -2.
    pub code: i64,
    pub meaning: ExitMeaning,
    /// The end of what it printed, or why it did not run.
    pub detail: String,
}

/// Exit code reported when the installer could not be started.
pub const CODE_NOT_STARTED: i64 = cascade_core::compliance::CODE_NOT_STARTED;
/// Exit code reported when the installer ran past its timeout.
pub const CODE_TIMED_OUT: i64 = cascade_core::compliance::CODE_TIMED_OUT;
/// How much of an installer's output is kept.
const TAIL: usize = 2048;

/// `{content}` (the first content file), `{content_dir}` and
/// `{content:N}` filled in.
fn fill(text: &str, files: &[PathBuf]) -> String {
    let dir = files
        .first()
        .and_then(|f| f.parent())
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let mut out = text.replace("{content_dir}", &dir);
    for (i, f) in files.iter().enumerate() {
        out = out.replace(&format!("{{content:{i}}}"), &f.display().to_string());
    }
    if let Some(first) = files.first() {
        out = out.replace("{content}", &first.display().to_string());
    }
    out
}

/// The command's arguments with the content's places filled in.
pub fn arguments(command: &InstallCommand, files: &[PathBuf]) -> Vec<String> {
    command.arguments.iter().map(|a| fill(a, files)).collect()
}

/// The program to run: a named one, or the content itself (`{content}`,
/// an installer that is an executable: made executable where the file
/// system has the notion).
pub fn program(command: &InstallCommand, files: &[PathBuf]) -> std::io::Result<String> {
    let program = fill(&command.program, files);
    #[cfg(unix)]
    if command.program.contains("{content") {
        use std::os::unix::fs::PermissionsExt;
        let path = Path::new(&program);
        let mut mode = std::fs::metadata(path)?.permissions();
        mode.set_mode(mode.mode() | 0o500);
        std::fs::set_permissions(path, mode)?;
    }
    Ok(program)
}

/// The installer to use when the catalog gives none: Windows' own for
/// `.msu`, `.msi` and `.cab` files (quiet, no restart: the agent restarts).
pub fn default_command(files: &[PathBuf]) -> Option<InstallCommand> {
    let first = files.first()?;
    let ext = first.extension()?.to_str()?.to_ascii_lowercase();
    let (program, arguments): (&str, &[&str]) = match ext.as_str() {
        "msu" => ("wusa.exe", &["{content}", "/quiet", "/norestart"]),
        "msi" => ("msiexec.exe", &["/i", "{content}", "/qn", "/norestart"]),
        "cab" => (
            "dism.exe",
            &[
                "/online",
                "/add-package",
                "/packagepath:{content}",
                "/quiet",
                "/norestart",
            ],
        ),
        _ => return None,
    };
    Some(InstallCommand {
        program: program.into(),
        arguments: arguments.iter().map(|s| s.to_string()).collect(),
        exit_codes: Vec::new(),
    })
}

fn tail(bytes: &[u8], keep: usize) -> String {
    let start = bytes.len().saturating_sub(keep);
    String::from_utf8_lossy(&bytes[start..]).trim().to_owned()
}

/// Reads a stream to its end keeping only its last bytes (an installer
/// may print without bound).
async fn keep_tail<R: tokio::io::AsyncRead + Unpin>(reader: Option<&mut R>, keep: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(reader) = reader else {
        return kept;
    };
    let mut buf = [0u8; 8192];
    while let Ok(n) = reader.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * keep {
            kept.drain(..kept.len() - keep);
        }
    }
    kept
}

/// Runs the installer in `workdir` and maps its exit code.
pub async fn run(command: &InstallCommand, files: &[PathBuf], workdir: &Path, timeout: Duration) -> Outcome {
    run_keeping(command, files, workdir, timeout, TAIL).await
}

/// Like `run`, keeping the last `keep` bytes of the output as the detail
/// (a listing command's whole output).
pub async fn run_keeping(
    command: &InstallCommand,
    files: &[PathBuf],
    workdir: &Path,
    timeout: Duration,
    keep: usize,
) -> Outcome {
    let fail = |code: i64, detail: String| Outcome {
        code,
        meaning: ExitMeaning::Failure,
        detail,
    };
    let program = match program(command, files) {
        Ok(program) => program,
        Err(e) => return fail(CODE_NOT_STARTED, format!("cannot start {}: {e}", command.program)),
    };
    let mut process = tokio::process::Command::new(&program);
    process
        .args(arguments(command, files))
        .current_dir(workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Its own process group, so that a timeout stops what it started too.
    #[cfg(unix)]
    process.process_group(0);
    let mut child = match process.spawn() {
        Ok(child) => child,
        Err(e) => return fail(CODE_NOT_STARTED, format!("cannot start {}: {e}", command.program)),
    };
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let read_all = async move {
        let (mut out, err) = tokio::join!(keep_tail(stdout.as_mut(), keep), keep_tail(stderr.as_mut(), keep));
        out.extend_from_slice(&err);
        out
    };
    let waited = tokio::time::timeout(timeout, async {
        let (output, status) = tokio::join!(read_all, child.wait());
        (output, status)
    })
    .await;
    match waited {
        Err(_) => {
            #[cfg(unix)]
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .stderr(Stdio::null())
                    .status();
            }
            let _ = child.start_kill();
            let _ = child.wait().await;
            fail(
                CODE_TIMED_OUT,
                format!(
                    "{} ran longer than {} s and was stopped",
                    command.program,
                    timeout.as_secs()
                ),
            )
        }
        Ok((_, Err(e))) => fail(CODE_NOT_STARTED, format!("{}: {e}", command.program)),
        Ok((output, Ok(status))) => {
            let code = match status.code() {
                Some(c) => i64::from(c),
                #[cfg(unix)]
                None => {
                    use std::os::unix::process::ExitStatusExt;
                    -i64::from(status.signal().unwrap_or(0))
                }
                #[cfg(not(unix))]
                None => CODE_NOT_STARTED,
            };
            Outcome {
                code,
                meaning: if status.code().is_some() {
                    command.meaning(code)
                } else {
                    ExitMeaning::Failure
                },
                detail: tail(&output, keep),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_core::update::ExitCode;

    fn sh(script: &str, exit_codes: Vec<ExitCode>) -> InstallCommand {
        InstallCommand {
            program: "/bin/sh".into(),
            arguments: vec!["-c".into(), script.into(), "installer".into(), "{content}".into()],
            exit_codes,
        }
    }

    /// A third-party installer is the content itself (winget's exe,
    /// nullsoft, inno, burn types): it is run with the package's switches.
    #[tokio::test]
    async fn the_content_itself_as_the_installer() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("Firefox Setup 156.0.1.exe");
        // As downloaded: not executable yet.
        std::fs::write(
            &file,
            "#!/bin/sh\n[ \"$1 $2\" = \"/S /PreventRebootRequired=true\" ] || exit 3\nexit 5\n",
        )
        .unwrap();
        let command = InstallCommand {
            program: "{content}".into(),
            arguments: vec!["/S".into(), "/PreventRebootRequired=true".into()],
            exit_codes: vec![ExitCode {
                code: 5,
                meaning: ExitMeaning::InUse,
            }],
        };
        let out = super::run(&command, &[file], dir.path(), Duration::from_secs(30)).await;
        // The switches arrived (else 3); 5 is "in use" by the package's map.
        assert_eq!((out.code, out.meaning), (5, ExitMeaning::InUse), "{}", out.detail);
    }

    #[tokio::test]
    async fn exit_codes_of_real_scripts_are_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("payload.bin");
        std::fs::write(&file, b"x").unwrap();
        let files = vec![file.clone()];
        let run = |cmd: InstallCommand, limit: u64| {
            let files = files.clone();
            let dir = dir.path().to_path_buf();
            async move { super::run(&cmd, &files, &dir, Duration::from_secs(limit)).await }
        };
        let ok = run(sh("echo installing $1; touch done", vec![]), 30).await;
        assert_eq!((ok.code, ok.meaning), (0, ExitMeaning::Success));
        assert!(
            ok.detail.contains(&format!("installing {}", file.display())),
            "{}",
            ok.detail
        );
        assert!(dir.path().join("done").exists(), "it ran in the work directory");

        // Linux exit codes stop at 255: an installer's own map says what
        // its codes mean (here 194 as "restart required", like 3010).
        let map = vec![
            ExitCode {
                code: 194,
                meaning: ExitMeaning::SuccessRestartRequired,
            },
            ExitCode {
                code: 17,
                meaning: ExitMeaning::NotApplicable,
            },
        ];
        let restart = run(sh("exit 194", map.clone()), 30).await;
        assert_eq!(restart.meaning, ExitMeaning::SuccessRestartRequired);
        assert_eq!(
            run(sh("exit 17", map.clone()), 30).await.meaning,
            ExitMeaning::NotApplicable
        );
        let failed = run(sh("echo disk error >&2; exit 7", map), 30).await;
        assert_eq!((failed.code, failed.meaning), (7, ExitMeaning::Failure));
        assert!(failed.detail.contains("disk error"));

        let killed = run(sh("kill -9 $$", vec![]), 30).await;
        assert_eq!((killed.code, killed.meaning), (-9, ExitMeaning::Failure));
        let slow = run(sh("sleep 30", vec![]), 1).await;
        assert_eq!((slow.code, slow.meaning), (CODE_TIMED_OUT, ExitMeaning::Failure));
        assert!(slow.detail.contains("longer than 1 s"));
        let missing = run(
            InstallCommand {
                program: "/nonexistent/installer".into(),
                arguments: vec![],
                exit_codes: vec![],
            },
            30,
        )
        .await;
        assert_eq!(missing.code, CODE_NOT_STARTED);
        assert!(missing.detail.contains("/nonexistent/installer"));
    }

    #[test]
    fn the_windows_defaults_map_3010_and_1641() {
        let cmd = default_command(&[PathBuf::from("C:/c/windows10.0-kb5021233-x64.msu")]).unwrap();
        assert_eq!(cmd.program, "wusa.exe");
        assert_eq!(cmd.meaning(3010), ExitMeaning::SuccessRestartRequired);
        assert_eq!(cmd.meaning(1641), ExitMeaning::RestartStarted);
        assert_eq!(cmd.meaning(0), ExitMeaning::Success);
        assert_eq!(cmd.meaning(1603), ExitMeaning::Failure);
        assert_eq!(
            arguments(&cmd, &[PathBuf::from("/c/x.msu")]),
            vec!["/c/x.msu", "/quiet", "/norestart"]
        );
        assert!(default_command(&[PathBuf::from("/c/readme.txt")]).is_none());
    }
}
