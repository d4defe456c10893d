//! What the catalog tells of vendor data it worked around: a leaf that the
//! catalog and the relations derived from the data (`containment.rs`) both
//! report in.

use crate::ids::UpdateId;

/// Something wrong in vendor data that the catalog worked around.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CatalogDiagnostic {
    /// Updates that supersede each other in a circle. Supersedence among
    /// them is ignored; each is judged on its own.
    SupersedenceCycle(Vec<UpdateId>),
    /// A relation the vendor did not state, derived from the data: `newer`
    /// contains `older`, which is then treated as superseded by it.
    Contains {
        newer: UpdateId,
        older: UpdateId,
        why: String,
    },
    /// A relation the data implies that contradicts what the vendor says
    /// (the vendor has `older` superseding `newer`); the vendor's word stands.
    ContainmentConflict {
        newer: UpdateId,
        older: UpdateId,
        why: String,
    },
}

impl std::fmt::Display for CatalogDiagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CatalogDiagnostic::SupersedenceCycle(ids) => {
                let names: Vec<&str> = ids.iter().map(UpdateId::as_str).collect();
                write!(
                    f,
                    "supersedence cycle among {}; supersedence between them is ignored",
                    names.join(", ")
                )
            }
            CatalogDiagnostic::Contains { newer, older, why } => write!(f, "{newer} contains {older}: {why}"),
            CatalogDiagnostic::ContainmentConflict { newer, older, why } => write!(
                f,
                "{newer} would contain {older} ({why}), but the vendor says {older} supersedes {newer}; the vendor's word stands"
            ),
        }
    }
}
