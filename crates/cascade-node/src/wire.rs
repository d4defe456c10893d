//! Snapshots in parts: how a store's snapshot is cut into messages and put
//! together again. Each message converts in `cascade_proto::convert`, with
//! every other conversion between the wire and the domain.

use cascade_core::model::NodeId;
use cascade_core::seal::{SignedObject, Tip};
use cascade_proto::convert::{Invalid, SignedOverride};
use cascade_proto::v1;

/// A snapshot in parts of at most `per_part` objects and overrides each;
/// the first part carries the cursor and each origin's last change. Objects
/// and overrides go as the exact bytes their origins signed.
pub fn snapshot_parts(snapshot: &cascade_store::Snapshot, per_part: usize) -> Vec<v1::SnapshotPart> {
    let per_part = per_part.max(1);
    let objects: Vec<_> = snapshot.objects.chunks(per_part).collect();
    let overrides: Vec<_> = snapshot.overrides.chunks(per_part).collect();
    let parts = objects.len().max(overrides.len()).max(1);
    (0..parts)
        .map(|i| v1::SnapshotPart {
            cursor: if i == 0 {
                snapshot.cursor.iter().map(|(o, s)| (o.to_string(), *s)).collect()
            } else {
                Default::default()
            },
            first: i == 0,
            last: i + 1 == parts,
            tips: if i == 0 {
                snapshot.tips.iter().map(v1::Tip::from).collect()
            } else {
                Vec::new()
            },
            objects: objects
                .get(i)
                .into_iter()
                .flat_map(|chunk| chunk.iter())
                .map(v1::SignedObject::from)
                .collect(),
            overrides: overrides
                .get(i)
                .into_iter()
                .flat_map(|chunk| chunk.iter())
                .map(v1::SignedOverride::from)
                .collect(),
        })
        .collect()
}

/// Adds one part from the wire to a snapshot being put together (the
/// cursor of the first part is read by the caller).
pub fn add_snapshot_part(snapshot: &mut cascade_store::Snapshot, part: v1::SnapshotPart) -> Result<(), String> {
    let bad = |e: Invalid| format!("snapshot: {e}");
    for tip in part.tips {
        let (origin, tip) = <(NodeId, Tip)>::try_from(tip).map_err(bad)?;
        snapshot.tips.insert(origin, tip);
    }
    for o in part.objects {
        snapshot.objects.push(SignedObject::try_from(o).map_err(bad)?);
    }
    for o in part.overrides {
        snapshot.overrides.push(SignedOverride::try_from(o).map_err(bad)?);
    }
    Ok(())
}
