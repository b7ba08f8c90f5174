"""A byte-level tokenizer with ChatML special tokens, for the bundled tiny model.

One token per UTF-8 byte (ids 0-255, in byte order) plus three special tokens, so any text
round-trips exactly and no training data is needed to build it. It is a standard
`tokenizer.json` + `tokenizer_config.json` pair, so transformers and vLLM load it as they
would any hub tokenizer:

    tok = build_byte_tokenizer()
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}],
                                  add_generation_prompt=True, tokenize=True)
    tok.save_pretrained(path)          # later: AutoTokenizer.from_pretrained(path)
"""

from __future__ import annotations

from functools import cache

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END)
BYTE_VOCAB_SIZE = 256
# Specials follow the 256 byte ids, so the vocabulary is exactly 259 entries.
VOCAB_SIZE = BYTE_VOCAB_SIZE + len(SPECIAL_TOKENS)
PAD_TOKEN_ID = BYTE_VOCAB_SIZE
IM_START_ID = BYTE_VOCAB_SIZE + 1
IM_END_ID = BYTE_VOCAB_SIZE + 2

# ChatML, as Qwen2 models use it: `<|im_start|>role\ncontent<|im_end|>\n` per message.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@cache
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, which the ByteLevel
    pre-tokenizer and decoder use; our vocabulary must be spelled in these characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def build_raw_tokenizer() -> Tokenizer:
    """The `tokenizers` object: BPE over the 256 byte symbols with no merges."""
    byte_chars = _bytes_to_unicode()
    vocab = {byte_chars[b]: b for b in range(BYTE_VOCAB_SIZE)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    # No regex pre-split: with no merges it changes nothing but would cost time, and
    # add_prefix_space=False keeps the text exactly as given (no leading space added).
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tok


def build_byte_tokenizer() -> PreTrainedTokenizerFast:
    """The transformers tokenizer: pad `<|endoftext|>`, eos `<|im_end|>`, ChatML template."""
    tok = PreTrainedTokenizerFast(
        tokenizer_object=build_raw_tokenizer(),
        pad_token=PAD_TOKEN,
        eos_token=IM_END,
        additional_special_tokens=[IM_START],
        chat_template=CHAT_TEMPLATE,
        # The default "clean up" rewrites " ." to "." and the like: it would break round trips.
        clean_up_tokenization_spaces=False,
        model_max_length=2048,
        padding_side="left",
    )
    # These must line up with the model config (eos/pad ids) of the tiny model.
    assert tok.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [PAD_TOKEN_ID, IM_START_ID, IM_END_ID]
    return tok
