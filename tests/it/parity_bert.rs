//! BERT parity against Hugging Face transformers 5.24 (eager attention, random weights, padded batch),
//! and the WordPiece tokenizer against transformers' own tokenizer on the same `tokenizer.json`.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use photoseg::model::text::{masked_mean, Bert, Config, TextEncoder};

use crate::common::*;

fn bert_fixture() -> (Bert, std::collections::HashMap<String, Tensor>) {
    let (t, meta) = load_fixture("bert_tiny.safetensors");
    let cfg: Config = serde_json::from_value(meta).expect("bert config");
    let vb = VarBuilder::from_tensors(with_prefix(&t, "model."), DType::F32, &Device::Cpu);
    (Bert::new(&cfg, vb).expect("build bert"), t)
}

#[test]
fn bert_matches_transformers_with_padding_tokens() {
    let (bert, t) = bert_fixture();
    let ids = t["input_ids"].to_dtype(DType::U32).unwrap();
    let types = t["token_type_ids"].to_dtype(DType::U32).unwrap();
    let mask = t["attention_mask"].to_dtype(DType::U32).unwrap();
    let hidden = bert.forward(&ids, &types, &mask).unwrap();
    assert_close("last_hidden_state", &hidden, &t["last_hidden_state"]);
    assert_close("pooler_output", &bert.pool_cls(&hidden).unwrap(), &t["pooler_output"]);
    assert_close("mean_pooled", &masked_mean(&hidden, &mask).unwrap(), &t["mean_pooled"]);
}

#[test]
fn padding_does_not_change_a_sentence_feature() {
    // Row 2 has 3 tokens: run it alone without padding and compare with the padded batch's row.
    let (bert, t) = bert_fixture();
    let ids = t["input_ids"].to_dtype(DType::U32).unwrap();
    let short = ids.narrow(0, 2, 1).unwrap().narrow(1, 0, 3).unwrap();
    let zeros = Tensor::zeros((1, 3), DType::U32, &Device::Cpu).unwrap();
    let ones = Tensor::ones((1, 3), DType::U32, &Device::Cpu).unwrap();
    let alone = masked_mean(&bert.forward(&short, &zeros, &ones).unwrap(), &ones).unwrap();
    assert_close("unpadded row", &alone, &t["mean_pooled"].narrow(0, 2, 1).unwrap());
}

#[derive(serde::Deserialize)]
struct Expected {
    text: String,
    ids: Vec<u32>,
}

#[test]
fn tokenizer_matches_transformers() {
    let tok = tokenizers::Tokenizer::from_file(fixture("tokenizer/tokenizer.json")).expect("tokenizer.json");
    let expected: Vec<Expected> =
        serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer/expected.json")).unwrap()).unwrap();
    assert!(expected.len() >= 5);
    for e in &expected {
        let enc = tok.encode(e.text.as_str(), true).unwrap();
        assert_eq!(enc.get_ids(), e.ids.as_slice(), "tokenizing {:?}", e.text);
    }
}

#[test]
fn text_encoder_batches_expression_and_anti_expression() {
    let (t, meta) = load_fixture("bert_tiny.safetensors");
    let cfg: Config = serde_json::from_value(meta).unwrap();
    let tok = tokenizers::Tokenizer::from_file(fixture("tokenizer/tokenizer.json")).unwrap();
    let bert = Bert::new(&cfg, VarBuilder::from_tensors(with_prefix(&t, "model."), DType::F32, &Device::Cpu)).unwrap();
    let enc = TextEncoder::new(bert, tok, &Device::Cpu);
    let (l, anti) = enc.encode_with_anti(&["the red circle", "my bike on the left"]).unwrap();
    assert_eq!(l.dims(), &[2, 32]);
    assert_eq!(anti.dims(), &[2, 32]);
    // Batched result equals one-at-a-time.
    let single = enc.encode(&["my bike on the left"]).unwrap();
    assert!(max_abs_diff(&l.narrow(0, 1, 1).unwrap(), &single) < 1e-5);
    // The anti-expression is a different sentence, so a different feature.
    assert!(max_abs_diff(&l, &anti) > 1e-3);
    let batch = enc.tokenize(&["<no> the red circle"]).unwrap();
    let ids: Vec<u32> = batch.ids.flatten_all().unwrap().to_vec1().unwrap();
    let vocab = std::fs::read_to_string(fixture("tokenizer/vocab.txt")).unwrap();
    let id_of = |w: &str| vocab.lines().position(|l| l == w).unwrap() as u32;
    assert_eq!(&ids[1..4], &[id_of("<"), id_of("no"), id_of(">")], "the <no> prefix is three known tokens");
}
