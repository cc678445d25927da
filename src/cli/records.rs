//! The short commands on records: `submit`, `ls`, `show`, `rm`, `prune`.

use anyhow::bail;

use super::print::{self, print};
use super::{IdArgs, LsArgs, PruneArgs, SubmitArgs, connect};
use crate::model::{ListQuery, NewProcess};

pub async fn submit(a: SubmitArgs) -> anyhow::Result<u8> {
    let client = connect(&a.client)?;
    let p = client
        .create_process(&NewProcess {
            id: a.id,
            workspace: a.workspace,
            name: a.name,
            status: Some(a.status),
            ..Default::default()
        })
        .await?;
    print(&format!("{}\n", p.id))?;
    Ok(0)
}

pub async fn ls(a: LsArgs) -> anyhow::Result<u8> {
    let client = connect(&a.client)?;
    let query = ListQuery {
        workspace: a.workspace,
        status: a.status,
        limit: None,
        cursor: None,
    };
    let processes = client.list_all(&query, a.limit).await?;
    if a.json {
        print(&format!("{}\n", serde_json::to_string_pretty(&processes)?))?;
    } else {
        let color = print::stdout_is_terminal();
        print(&print::process_table(&processes, crate::model::now(), color))?;
    }
    Ok(0)
}

pub async fn show(a: IdArgs) -> anyhow::Result<u8> {
    let client = connect(&a.client)?;
    let p = client.get_process(&a.id).await?;
    print(&format!("{}\n", serde_json::to_string_pretty(&p)?))?;
    Ok(0)
}

pub async fn rm(a: IdArgs) -> anyhow::Result<u8> {
    let client = connect(&a.client)?;
    client.delete_process(&a.id).await?;
    print(&format!("removed {}\n", a.id))?;
    Ok(0)
}

pub async fn prune(a: PruneArgs) -> anyhow::Result<u8> {
    if a.max_age.is_none() && a.max_count.is_none() {
        bail!("give --max-age and/or --max-count (e.g. `prochub prune --max-age 7d`)");
    }
    let client = connect(&a.client)?;
    let removed = client.prune(a.max_age, a.max_count).await?;
    print(&format!("removed {removed}\n"))?;
    Ok(0)
}
