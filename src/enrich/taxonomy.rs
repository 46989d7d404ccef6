//! Taxonomies as data: a TSV file with a header row naming at least `id` (or `qcode`) and
//! `label`, optionally `definition`, `parent` and `active`; other columns are ignored. Loaded
//! into a tree (parents checked, cycles refused) and versioned by the hash of the file's bytes,
//! so every signal can name the exact taxonomy it was computed against.
//!
//! Lines before the header that start with `#` are comments; one of them may be the setting
//! `# exclusive = true`: an exclusive taxonomy (a section, a desk) gives every item exactly one
//! label, whichever command or route tags against it (see [`crate::enrich::for_taxonomy`]).

use std::collections::HashMap;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Why a taxonomy file cannot be used; each names the file and, where there is one, the line.
#[derive(Debug, thiserror::Error)]
pub enum TaxonomyError {
    #[error("cannot read taxonomy {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: String,
        line: usize,
        message: String,
    },
}

/// One concept of a taxonomy.
#[derive(Debug, Clone, PartialEq)]
pub struct Concept {
    /// Stable identifier (`earn`, `medtop:20000002`).
    pub id: String,
    /// Human name.
    pub label: String,
    pub definition: Option<String>,
    /// The parent concept's id, for hierarchical taxonomies.
    pub parent: Option<String>,
    /// Retired concepts are kept (old tags still resolve) but not offered as candidates.
    pub active: bool,
}

/// A loaded taxonomy.
#[derive(Debug, Clone)]
pub struct Taxonomy {
    /// The file's stem (`taxonomy`, `mediatopics_en-GB`).
    pub name: String,
    /// The first 12 hex digits of the file's sha256: lineage names `name@version`.
    pub version: String,
    /// Every item gets exactly one of its labels (`# exclusive = true` above the header).
    pub exclusive: bool,
    concepts: Vec<Concept>,
    index: HashMap<String, usize>,
}

/// The `exclusive` setting a comment line above the header gives, if it gives one.
fn exclusive_setting(comment: &str) -> Option<Result<bool, String>> {
    let comment = comment.trim_start().trim_start_matches('#').trim();
    let value = comment.strip_prefix("exclusive")?;
    Some(match value.trim().strip_prefix('=').map(str::trim) {
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        _ => Err(format!(
            "the setting {comment:?}: write `# exclusive = true` (or false)"
        )),
    })
}

impl Taxonomy {
    /// Load a TSV taxonomy file.
    pub fn load(path: &Path) -> Result<Self, TaxonomyError> {
        let bytes = std::fs::read(path).map_err(|source| TaxonomyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
            .trim_end_matches(".tsv")
            .to_string();
        Self::parse(&name, &path.display().to_string(), &bytes)
    }

    /// Parse TSV bytes; `source` names them in errors.
    pub fn parse(name: &str, source: &str, bytes: &[u8]) -> Result<Self, TaxonomyError> {
        let invalid = |line: usize, message: String| TaxonomyError::Invalid {
            path: source.to_string(),
            line,
            message,
        };
        let text = std::str::from_utf8(bytes)
            .map_err(|e| invalid(0, format!("not UTF-8: {e}")))?
            .trim_start_matches('\u{feff}');
        let mut lines = text.lines().enumerate().peekable();
        let mut exclusive = false;
        while let Some((n, comment)) = lines.next_if(|(_, l)| l.trim_start().starts_with('#')) {
            if let Some(setting) = exclusive_setting(comment) {
                exclusive = setting.map_err(|message| invalid(n + 1, message))?;
            }
        }
        let header: Vec<String> = lines
            .next()
            .map(|(_, h)| {
                h.split('\t')
                    .map(|c| c.trim().to_ascii_lowercase())
                    .collect()
            })
            .ok_or_else(|| invalid(1, "empty file: a header row is needed".into()))?;
        let column = |names: &[&str]| header.iter().position(|h| names.contains(&h.as_str()));
        let id_col = column(&["id", "qcode"])
            .ok_or_else(|| invalid(1, "the header names no id (or qcode) column".into()))?;
        let label_col = column(&["label"])
            .ok_or_else(|| invalid(1, "the header names no label column".into()))?;
        let definition_col = column(&["definition"]);
        let parent_col = column(&["parent"]);
        let active_col = column(&["active"]);
        let mut concepts = Vec::new();
        let mut index = HashMap::new();
        let mut lines_of = Vec::new();
        for (n, line) in lines {
            let line_no = n + 1;
            if line.trim().is_empty() {
                continue;
            }
            let cells: Vec<&str> = line.split('\t').collect();
            let cell = |c: Option<usize>| {
                c.and_then(|c| cells.get(c))
                    .map(|s| s.trim())
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            };
            let id = cell(Some(id_col)).ok_or_else(|| invalid(line_no, "no id".into()))?;
            let label = cell(Some(label_col))
                .ok_or_else(|| invalid(line_no, format!("concept {id:?} has no label")))?;
            let active = match cell(active_col).as_deref().map(str::to_ascii_lowercase) {
                None => true,
                Some(v) if ["true", "1", "yes", "y"].contains(&v.as_str()) => true,
                Some(v) if ["false", "0", "no", "n"].contains(&v.as_str()) => false,
                Some(v) => {
                    return Err(invalid(
                        line_no,
                        format!("active is {v:?}: use true or false"),
                    ))
                }
            };
            if index.insert(id.clone(), concepts.len()).is_some() {
                return Err(invalid(line_no, format!("concept {id:?} is listed twice")));
            }
            concepts.push(Concept {
                id,
                label,
                definition: cell(definition_col),
                parent: cell(parent_col),
                active,
            });
            lines_of.push(line_no);
        }
        if concepts.is_empty() {
            return Err(invalid(1, "no concepts after the header".into()));
        }
        let taxonomy = Self {
            name: name.to_string(),
            version: {
                let digest = Sha256::digest(bytes);
                digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
            },
            exclusive,
            concepts,
            index,
        };
        for (c, line) in taxonomy.concepts.iter().zip(lines_of) {
            if let Some(p) = &c.parent {
                if !taxonomy.index.contains_key(p) {
                    return Err(invalid(
                        line,
                        format!(
                            "concept {:?} has parent {p:?}, which is not in the file",
                            c.id
                        ),
                    ));
                }
            }
            let mut seen = 0;
            let mut at = c.parent.as_deref();
            while let Some(p) = at {
                seen += 1;
                if p == c.id || seen > taxonomy.concepts.len() {
                    return Err(invalid(
                        line,
                        format!("concept {:?} is its own ancestor", c.id),
                    ));
                }
                at = taxonomy.get(p).and_then(|p| p.parent.as_deref());
            }
        }
        Ok(taxonomy)
    }

    /// `name@version`, for lineage.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// Every concept, in file order.
    pub fn concepts(&self) -> &[Concept] {
        &self.concepts
    }

    /// The concept `id`, if the taxonomy has it.
    pub fn get(&self, id: &str) -> Option<&Concept> {
        self.index.get(id).map(|&i| &self.concepts[i])
    }

    /// Whether `id` is a concept of this taxonomy.
    pub fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// The ancestors of `id`, nearest first.
    pub fn ancestors(&self, id: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut at = self.get(id).and_then(|c| c.parent.as_deref());
        while let Some(p) = at {
            out.push(p);
            at = self.get(p).and_then(|c| c.parent.as_deref());
        }
        out
    }

    /// Whether any concept has a parent.
    pub fn is_hierarchical(&self) -> bool {
        self.concepts.iter().any(|c| c.parent.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TREE: &str = "qcode\tlabel\tdefinition\tparent\tactive\textra\n\
        sport\tSport\tAll sport\t\ttrue\tx\n\
        football\tFootball\t\tsport\t\t\n\
        cup\tCup final\t\tfootball\tfalse\t\n\
        economy\tEconomy\t\t\t\t\n";

    #[test]
    fn a_tree_loads_with_ancestors_versions_and_retired_concepts() {
        let t = Taxonomy::parse("tree", "tree.tsv", TREE.as_bytes()).unwrap();
        assert_eq!(t.concepts().len(), 4);
        assert_eq!(t.ancestors("cup"), ["football", "sport"]);
        assert!(t.ancestors("economy").is_empty());
        assert!(!t.get("cup").unwrap().active && t.get("football").unwrap().active);
        assert_eq!(
            t.get("sport").unwrap().definition.as_deref(),
            Some("All sport")
        );
        assert!(t.is_hierarchical());
        assert_eq!(t.version.len(), 12);
        let other = Taxonomy::parse(
            "tree",
            "tree.tsv",
            TREE.replace("Sport", "Sports").as_bytes(),
        );
        assert_ne!(
            other.unwrap().version,
            t.version,
            "the version follows the content"
        );
    }

    #[test]
    fn bad_files_name_the_line_and_the_problem() {
        let e = |text: &str| {
            Taxonomy::parse("t", "t.tsv", text.as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(e("name\tlabel\nx\tX\n").contains("no id (or qcode) column"));
        assert!(
            e("id\tlabel\na\tA\na\tA again\n").contains("t.tsv:3: concept \"a\" is listed twice")
        );
        assert!(
            e("id\tlabel\tparent\na\tA\tzz\n").contains("t.tsv:2: concept \"a\" has parent \"zz\"")
        );
        assert!(e("id\tlabel\tparent\na\tA\tb\nb\tB\ta\n").contains("its own ancestor"));
        assert!(e("id\tlabel\tactive\na\tA\tmaybe\n").contains("t.tsv:2: active is \"maybe\""));
        assert!(e("id\tlabel\n").contains("no concepts"));
        assert!(e("# exclusive = yes\nid\tlabel\na\tA\n")
            .contains("t.tsv:1: the setting \"exclusive = yes\""));
    }

    #[test]
    fn comments_above_the_header_may_make_the_taxonomy_exclusive() {
        let parse = |text: &str| Taxonomy::parse("desks", "desks.tsv", text.as_bytes()).unwrap();
        let plain = parse("id\tlabel\nsport\tSport\n");
        assert!(!plain.exclusive);
        let desks = parse("# The desks of the newsroom\n# exclusive = true\nid\tlabel\nsport\tSport\nbusiness\tBusiness\n");
        assert!(desks.exclusive);
        assert_eq!(desks.concepts().len(), 2);
        assert!(!parse("#exclusive=false\nid\tlabel\na\tA\n").exclusive);
    }
}
