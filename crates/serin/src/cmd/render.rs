//! `serin render kubernetes STACK`: the stack's Kubernetes objects, printed
//! as one YAML stream or written as a Kustomize base.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{RenderCommand, RenderKubernetesArgs};

pub fn run(cmd: RenderCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RenderCommand::Kubernetes(args) => kubernetes(&args),
    }
}

fn kubernetes(args: &RenderKubernetesArgs) -> anyhow::Result<ExitCode> {
    let stack = match serin_config::stack::load_stack_file(&args.stack) {
        Ok(s) => s,
        Err(errors) => {
            eprint!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let options = serin_kube::RenderOptions {
        image_repo: args.image_repo.clone(),
        tag: args.tag.clone(),
        namespace: args.namespace.clone(),
    };
    let manifests = match serin_kube::render(&stack, &options) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{}: {e}", args.stack.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    match &args.output_dir {
        Some(dir) => {
            let files = manifests.kustomize()?;
            serin_kube::write_kustomize(dir, &files)?;
            eprintln!(
                "wrote {} objects and {} to {}",
                manifests.objects.len(),
                serin_kube::KUSTOMIZATION,
                dir.display()
            );
        }
        None => {
            let text = manifests.to_yaml()?;
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .context("cannot write to stdout")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
