//! A WordPiece tokenizer for a closed vocabulary (the synthetic world's words), in Hugging Face's
//! `tokenizer.json` format, so the built-in model's text side is an ordinary BERT with a 40-word vocabulary.
use anyhow::Result;
use serde_json::json;

/// Special tokens first (BERT's order), then `<`, `no`, `>` for the anti-expression prefix, then `words`.
pub fn wordpiece_tokenizer(words: &[&str]) -> Result<tokenizers::Tokenizer> {
    let mut vocab: Vec<String> =
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<", "no", ">"].map(String::from).to_vec();
    for w in words {
        let w = w.to_lowercase();
        if !vocab.contains(&w) {
            vocab.push(w);
        }
    }
    let vocab_map: serde_json::Map<String, serde_json::Value> =
        vocab.iter().enumerate().map(|(i, w)| (w.clone(), json!(i))).collect();
    let special = |id: usize, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": true})
    };
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0, "[PAD]"), special(1, "[UNK]"), special(2, "[CLS]"), special(3, "[SEP]"), special(4, "[MASK]")],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}, "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": vocab_map}
    });
    tokenizers::Tokenizer::from_bytes(serde_json::to_vec(&doc)?).map_err(|e| anyhow::anyhow!("building tokenizer: {e}"))
}

/// The share of the words of `expressions` that `tokenizer` reads as its unknown token (a word is
/// unknown when any of its pieces is); 0 for a tokenizer without `[UNK]`.
pub fn unknown_share(tokenizer: &tokenizers::Tokenizer, expressions: &[&str]) -> Result<f64> {
    let Some(unk) = tokenizer.token_to_id("[UNK]") else { return Ok(0.0) };
    let (mut words, mut unknown) = (0usize, 0usize);
    for e in expressions {
        let enc = tokenizer.encode(*e, false).map_err(|err| anyhow::anyhow!("tokenizing {e:?}: {err}"))?;
        let mut seen: std::collections::BTreeMap<u32, bool> = std::collections::BTreeMap::new();
        for (word, &id) in enc.get_word_ids().iter().zip(enc.get_ids()) {
            if let Some(w) = word {
                *seen.entry(*w).or_default() |= id == unk;
            }
        }
        words += seen.len();
        unknown += seen.values().filter(|&&u| u).count();
    }
    Ok(if words == 0 { 0.0 } else { unknown as f64 / words as f64 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unknown_share_counts_words_not_pieces() {
        let tok = wordpiece_tokenizer(&["the", "red", "circle"]).unwrap();
        assert_eq!(unknown_share(&tok, &["the red circle"]).unwrap(), 0.0);
        assert_eq!(unknown_share(&tok, &["man on left", "red circle"]).unwrap(), 0.6);
        assert_eq!(unknown_share(&tok, &[]).unwrap(), 0.0);
    }

    #[test]
    fn closed_vocabulary_tokenizes_words_and_the_anti_prefix() {
        let tok = wordpiece_tokenizer(&["the", "red", "circle"]).unwrap();
        let ids = tok.encode("<no> The RED circle", true).unwrap().get_ids().to_vec();
        assert_eq!(ids, vec![2, 5, 6, 7, 8, 9, 10, 3]);
        let unknown = tok.encode("blue", true).unwrap().get_ids().to_vec();
        assert_eq!(unknown, vec![2, 1, 3]);
        assert_eq!(tok.get_vocab_size(true), 11);
    }
}
