//! Asterisk's database (AstDB) as the simulator keeps it, in memory: what the dialplan's
//! `Set(DB(family/key)=value)` writes and the AMI actions `DBPut`, `DBGet`, `DBGetTree`, `DBDel`
//! and `DBDelTree` read and change. Keys are stored as Asterisk's `main/db.c` stores them,
//! `/family/key`, and a tree is every key under `/family[/key]/`, as its `key || '/' LIKE
//! prefix || '/%'` selects them. The wire answers are those of a real Asterisk 22
//! (../shared/reference/asterisk-22-ami-transcripts/k3_astdb_outcome_record).

use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
pub(crate) struct AstDb {
    entries: Mutex<BTreeMap<String, String>>,
}

/// `/family/key`, or `/family` without a key (`create_prefix` in db.c).
fn path(family: &str, key: Option<&str>) -> String {
    match key.filter(|k| !k.is_empty()) {
        Some(key) => format!("/{family}/{key}"),
        None => format!("/{family}"),
    }
}

fn in_tree(stored: &str, prefix: &str) -> bool {
    stored.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl AstDb {
    pub fn put(&self, family: &str, key: &str, value: &str) {
        self.entries.lock().unwrap().insert(path(family, Some(key)), value.to_owned());
    }

    pub fn get(&self, family: &str, key: &str) -> Option<String> {
        self.entries.lock().unwrap().get(&path(family, Some(key))).cloned()
    }

    /// Whether there was such an entry.
    pub fn del(&self, family: &str, key: &str) -> bool {
        self.entries.lock().unwrap().remove(&path(family, Some(key))).is_some()
    }

    /// Every `(/family/key, value)` under the tree, in key order.
    pub fn tree(&self, family: &str, key: Option<&str>) -> Vec<(String, String)> {
        let prefix = path(family, key);
        let entries = self.entries.lock().unwrap();
        entries.iter().filter(|(k, _)| in_tree(k, &prefix)).map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// How many entries the tree held.
    pub fn del_tree(&self, family: &str, key: Option<&str>) -> usize {
        let prefix = path(family, key);
        let mut entries = self.entries.lock().unwrap();
        let before = entries.len();
        entries.retain(|k, _| !in_tree(k, &prefix));
        before - entries.len()
    }

    /// `DB(family/key)` as the dialplan names an entry: the family up to the first `/`, the key
    /// the rest (func_db.c splits its argument so).
    pub fn split(argument: &str) -> Option<(&str, &str)> {
        argument.split_once('/').filter(|(family, key)| !family.is_empty() && !key.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_are_whole_path_segments() {
        let db = AstDb::default();
        db.put("dialback", "89ab", "one");
        db.put("dialback", "day/1", "two");
        db.put("dialbacks", "x", "other family");
        assert_eq!(db.tree("dialback", None).len(), 2);
        assert_eq!(db.tree("dialback", Some("day")), [("/dialback/day/1".to_owned(), "two".to_owned())]);
        assert_eq!(db.del_tree("dialback", None), 2);
        assert_eq!(db.get("dialbacks", "x").as_deref(), Some("other family"));
        assert!(!db.del("dialback", "89ab"));
        assert_eq!(AstDb::split("dialback/a/b"), Some(("dialback", "a/b")));
    }
}
