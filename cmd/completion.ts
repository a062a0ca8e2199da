/**
 * `cluster completion bash|zsh|fish`: shell completion scripts, generated from the command
 * definitions so that a new flag completes without anyone editing a script.
 *
 * @module
 */
import { type ArgsDef, defineCommand } from "citty";
import { UsageError } from "./_args.ts";

/** What completion needs from a command: its description and its arguments. */
export interface CommandInfo {
  description: string;
  args: ArgsDef;
}

const shells = ["bash", "zsh", "fish"] as const;
type Shell = typeof shells[number];

/** The flags of a command, as `--name`, with whether each takes a value. */
function flagsOf(args: ArgsDef): Array<{ name: string; value: boolean; description: string }> {
  return Object.entries(args)
    .filter(([, a]) => (a as { type?: string }).type !== "positional")
    .map(([name, a]) => ({ name, value: (a as { type?: string }).type !== "boolean", description: (a as { description?: string }).description ?? "" }));
}

function bash(commands: Record<string, CommandInfo>): string {
  const names = Object.keys(commands).join(" ");
  const cases = Object.entries(commands).map(([name, c]) => {
    const flags = flagsOf(c.args);
    const withValue = flags.filter((f) => f.value).map((f) => `--${f.name}`).join("|");
    const words = name === "help" ? names : name === "completion" ? shells.join(" ") : "";
    return `    ${name})\n      opts="${flags.map((f) => `--${f.name}`).join(" ")} --help"\n      words="${words}"\n      valued="${withValue}"\n      ;;`;
  }).join("\n");
  return `# bash completion for cluster. Load it with: source <(cluster completion bash)
# or install it: cluster completion bash > /etc/bash_completion.d/cluster
_cluster() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" prev="\${COMP_WORDS[COMP_CWORD-1]}"
  local opts="" words="" valued=""
  COMPREPLY=()
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "${names} --help --version" -- "$cur"))
    return 0
  fi
  case "\${COMP_WORDS[1]}" in
${cases}
  esac
  # After a flag that takes a value: files (complete -o default).
  if [ -n "$valued" ] && [[ "$prev" == --* ]] && [[ "|$valued|" == *"|$prev|"* ]]; then
    return 0
  fi
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  elif [ -n "$words" ]; then
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
  fi
  return 0
}
complete -o default -F _cluster cluster
`;
}

/** Quotes text for a zsh `_arguments` spec inside single quotes. */
const zshText = (s: string) => s.replace(/'/g, "'\\''").replace(/[[\]:]/g, (c) => `\\${c}`);

function zsh(commands: Record<string, CommandInfo>): string {
  const list = Object.entries(commands).map(([name, c]) => `    '${name}:${zshText(c.description)}'`).join("\n");
  const cases = Object.entries(commands).map(([name, c]) => {
    const specs = flagsOf(c.args).map((f) => `'--${f.name}[${zshText(f.description)}]${f.value ? ":value:_files" : ""}'`);
    const rest = name === "help" ? `'1:command:(${Object.keys(commands).join(" ")})'` : name === "completion" ? `'1:shell:(${shells.join(" ")})'` : "'*:file:_files'";
    return `    ${name})\n      _arguments ${[...specs, rest].join(" \\\n        ")}\n      ;;`;
  }).join("\n");
  return `#compdef cluster
# zsh completion for cluster. Load it with: source <(cluster completion zsh)
# or install it as _cluster in a directory of $fpath.
_cluster() {
  local -a commands
  commands=(
${list}
  )
  if (( CURRENT == 2 )); then
    _describe 'command' commands
    return
  fi
  words=("\${words[@]:1}")
  (( CURRENT-- ))
  case "\${words[1]}" in
${cases}
  esac
}
if [ "$funcstack[1]" = "_cluster" ]; then
  _cluster "$@"
else
  compdef _cluster cluster
fi
`;
}

/** Quotes text for fish inside single quotes. */
const fishText = (s: string) => s.replace(/\\/g, "\\\\").replace(/'/g, "\\'");

function fish(commands: Record<string, CommandInfo>): string {
  const lines = ["# fish completion for cluster. Load it with: cluster completion fish | source", "# or install it: cluster completion fish > ~/.config/fish/completions/cluster.fish", "complete -c cluster -f"];
  const names = Object.keys(commands).join(" ");
  for (const [name, c] of Object.entries(commands)) {
    lines.push(`complete -c cluster -n '__fish_use_subcommand' -a ${name} -d '${fishText(c.description)}'`);
    for (const f of flagsOf(c.args)) {
      lines.push(`complete -c cluster -n '__fish_seen_subcommand_from ${name}' -l ${f.name}${f.value ? " -r -F" : ""} -d '${fishText(f.description)}'`);
    }
  }
  lines.push(`complete -c cluster -n '__fish_seen_subcommand_from help' -a '${names}'`);
  lines.push(`complete -c cluster -n '__fish_seen_subcommand_from completion' -a '${shells.join(" ")}'`);
  lines.push(`complete -c cluster -n '__fish_seen_subcommand_from submit worker nanny scheduler local' -F`);
  return lines.join("\n") + "\n";
}

/**
 * The completion script of a shell for these commands.
 *
 * @example
 * ```ts
 * completionScript("bash", { info: { description: "Workers", args: {} } });
 * ```
 */
export function completionScript(shell: string, commands: Record<string, CommandInfo>): string {
  switch (shell as Shell) {
    case "bash":
      return bash(commands);
    case "zsh":
      return zsh(commands);
    case "fish":
      return fish(commands);
    default:
      throw new UsageError(`Unknown shell "${shell}" (expected bash, zsh or fish)`);
  }
}

const args = {
  shell: { type: "positional", description: "bash, zsh or fish", required: true },
} as const;

/** The `completion` subcommand; `commands` is called late because it lists this command too. */
export function completionCommand(commands: () => Record<string, CommandInfo>): ReturnType<typeof defineCommand<typeof args>> {
  return defineCommand({
    meta: { name: "completion", description: "Print a shell completion script: bash, zsh or fish" },
    args,
    run({ args: a }) {
      process.stdout.write(completionScript(String(a.shell), commands()));
    },
  });
}
