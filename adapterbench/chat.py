"""`adapterbench chat`: talk to the base or an adapter in the terminal, the model's chat template applied and its
tokens streamed as they come; /adapter switches models, /reset starts over."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Callable

HELP = """commands: /adapter NAME (switch; 'base' = no adapter)  /adapters (list)  /reset (forget the conversation)
          /system TEXT (set the system prompt and reset)  /help  /quit (or Ctrl-D)"""


def _streamer(tokenizer, write: Callable[[str], None]):
    from transformers import TextStreamer

    class Streamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False):
            write(text + ("\n" if stream_end else ""))

    return Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def run_chat(base: str = "default", adapters: dict[str, str] | None = None, *, start_with: str | None = None,
             max_new_tokens: int = 256, temperature: float = 0.0, system_prompt: str | None = None,
             dtype: str = "auto", quant: str = "auto", allow_base_mismatch: bool = False,
             allow_noop_adapter: bool = False,
             read: Callable[[str], str] = input,
             write: Callable[[str], None] = print) -> None:
    """The read-answer loop. `read(prompt)` returns a line (EOFError ends the chat); `write(text)` shows text as it
    arrives, without adding newlines."""
    import torch

    from adapterbench.adapters.models import stay_offline
    from adapterbench.errors import UserError
    from adapterbench.harness.evaluate import check_base, load_session, quiet_libraries

    stay_offline()
    quiet_libraries()
    adapters = adapters or {}
    # everything the model is not needed for, before it loads
    if max_new_tokens < 1:
        raise UserError(f"{max_new_tokens} is not valid (expected a positive number of tokens)",
                        field="--max-new-tokens")
    if temperature < 0:
        raise UserError(f"{temperature} is not valid (0 decodes greedily, above 0 samples)", field="--temperature")
    labels = ["base", *adapters]
    label = start_with or (next(iter(adapters)) if adapters else "base")
    if label not in labels:
        raise UserError(f"no model '{label}'; loaded: {', '.join(labels)}", field="--use")
    check_base(base, dtype, quant)
    lm, _ = load_session(base, adapters, dtype=dtype, quant=quant, allow_base_mismatch=allow_base_mismatch,
                         allow_noop_adapter=allow_noop_adapter)
    tokenizer = lm.tokenizer
    if not getattr(tokenizer, "chat_template", None):
        write("note: this tokenizer has no chat template; turns are joined as plain text\n")
    messages: list[dict] = []
    with ExitStack() as active:
        active.enter_context(lm.use(label))
        write(f"chatting with '{label}' ({', '.join(labels)} loaded). {HELP}\n")
        while True:
            try:
                line = read(f"[{label}] you> ").strip()
            except (EOFError, KeyboardInterrupt):
                write("\n")
                return
            if not line:
                continue
            if line.startswith("/"):
                command, _, arg = line.partition(" ")
                arg = arg.strip()
                if command in ("/quit", "/exit"):
                    return
                if command == "/reset":
                    messages = []
                    write("(conversation cleared)\n")
                elif command == "/adapter":
                    if arg not in labels:
                        write(f"no model '{arg}'; loaded: {', '.join(labels)}\n")
                        continue
                    active.close()
                    active.enter_context(lm.use(arg))
                    label = arg
                    write(f"(now '{label}'; the conversation so far is kept, /reset to start over)\n")
                elif command == "/adapters":
                    write("".join(f"{'*' if name == label else ' '} {name}\n" for name in labels))
                elif command == "/system":
                    system_prompt, messages = arg or None, []
                    write(f"(system prompt {'set' if arg else 'cleared'}; conversation cleared)\n")
                else:
                    write(HELP + "\n")
                continue
            messages.append({"role": "user", "content": line})
            turns = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + messages
            if getattr(tokenizer, "chat_template", None):
                ids = tokenizer.apply_chat_template(turns, add_generation_prompt=True, return_tensors="pt",
                                                    return_dict=True)["input_ids"]
            else:
                ids = tokenizer("\n\n".join(m["content"] for m in turns) + "\n\n", return_tensors="pt").input_ids
            sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
            write(f"[{label}] ")
            with torch.no_grad():
                output = lm.model.generate(input_ids=ids.to(lm.device), attention_mask=torch.ones_like(ids).to(lm.device),
                                           max_new_tokens=max_new_tokens, streamer=_streamer(tokenizer, write),
                                           pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id, **sampling)
            reply = tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True).strip()
            messages.append({"role": "assistant", "content": reply})
