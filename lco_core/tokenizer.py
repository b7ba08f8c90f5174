"""A byte-level tokenizer with ChatML special tokens, for the bundled tiny model.

One token per UTF-8 byte (ids 0-255, in byte order) plus three special tokens, so no
training data is needed to build it. It is transformers' own `Qwen2Tokenizer` with a byte
vocabulary and no merges, because transformers loads *every* `qwen2` model dir with that
class (whatever `tokenizer_config.json` names) and that class normalizes text to Unicode
NFC. Building it as the same class means the saved files load back as exactly the
tokenizer that was saved, in transformers and in vLLM alike:

    tok = build_byte_tokenizer()
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}],
                                  add_generation_prompt=True, tokenize=True)
    tok.save_pretrained(path)          # later: AutoTokenizer.from_pretrained(path)

Round trip: `decode(encode(text)) == unicodedata.normalize("NFC", text)` for any text, as
with Qwen2's own tokenizer; text already in NFC (nearly all text) comes back unchanged.
"""

from __future__ import annotations

from functools import cache

from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

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


def build_byte_tokenizer() -> Qwen2Tokenizer:
    """The tokenizer: pad `<|endoftext|>`, eos `<|im_end|>`, ChatML template, left padding."""
    byte_chars = _bytes_to_unicode()
    vocab = {byte_chars[b]: b for b in range(BYTE_VOCAB_SIZE)}
    # Fixed ids for the specials (they must line up with the model config's eos/pad ids).
    vocab.update({token: BYTE_VOCAB_SIZE + i for i, token in enumerate(SPECIAL_TOKENS)})
    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        unk_token=None,  # type: ignore[arg-type]  # a byte vocabulary has no unknowns
        pad_token=PAD_TOKEN,
        eos_token=IM_END,
        extra_special_tokens=[IM_START],
        chat_template=CHAT_TEMPLATE,
        # The default "clean up" rewrites " ." to "." and the like: it would break round trips.
        clean_up_tokenization_spaces=False,
        model_max_length=2048,
        padding_side="left",
    )
    assert tok.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [PAD_TOKEN_ID, IM_START_ID, IM_END_ID]
    assert len(tok) == VOCAB_SIZE
    return tok
