//! `tollgate`: see what waits for you, approve it, send events, roll out workflows.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Usage errors exit with 2 here, before anything runs.
    let cli = tollgate_cli::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(tollgate_cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tollgate_cli::report(&e, &tollgate_cli::output_style());
            ExitCode::from(tollgate_cli::exit_code(&e))
        }
    }
}
