"""A minimal hardware handoff (.hwh) for flipq's block design, in Vivado's schema.

Only Vivado writes the real one. This one describes the same design (PS with fclk0, an AXI
DMA in simple mode, the flipq accelerator with an ``s_axi_control`` interface and AXI
streams to and from the DMA) with the element and parameter names Vivado uses, so that
pynq's ``Overlay`` and pynqmetadata read it exactly like a real one: the simulated PYNQ
device (:mod:`flipq.overlays.pynq_sim`) runs the unmodified pynq driver code against it, and
``check_overlay`` is tested on it. Interconnects, resets and unused PS pins are left out;
they carry nothing the host reads.
"""

from __future__ import annotations

from xml.etree import ElementTree as ET

from flipq.host.accelmeta import AccelMeta
from flipq.overlays.clocks import pl_clock_divisors

DMA_BASE = 0x40400000  # Vivado's default address for the first axi_dma on M_AXI_GP0
ACCEL_BASE = 0x43C00000  # ... and for the first custom AXI-lite IP
ADDR_RANGE = 0x10000
DMA_VLNV = "xilinx.com:ip:axi_dma:7.1"
PS7_VLNV = "xilinx.com:ip:processing_system7:5.5"
ZUPS_VLNV = "xilinx.com:ip:zynq_ultra_ps_e:3.3"
PS_NAME = "processing_system7_0"
ZUPS_NAME = "zynq_ultra_ps_e_0"

# PG021: the simple-mode register map both the DMA driver and the simulator use.
DMA_REGISTERS = (
    ("MM2S_DMACR", 0x00), ("MM2S_DMASR", 0x04), ("MM2S_SA", 0x18), ("MM2S_SA_MSB", 0x1C),
    ("MM2S_LENGTH", 0x28), ("S2MM_DMACR", 0x30), ("S2MM_DMASR", 0x34), ("S2MM_DA", 0x48),
    ("S2MM_DA_MSB", 0x4C), ("S2MM_LENGTH", 0x58),
)
# Vitis HLS s_axilite map for ap_ctrl_hs: control words, then one argument per 8 bytes.
HLS_CONTROL_REGISTERS = (("CTRL", 0x00), ("GIER", 0x04), ("IP_IER", 0x08), ("IP_ISR", 0x0C))


def _sub(parent, tag, **attrs):
    return ET.SubElement(parent, tag, {k: str(v) for k, v in attrs.items()})


def _params(module, params):
    el = _sub(module, "PARAMETERS")
    for name, value in params:
        _sub(el, "PARAMETER", NAME=name, VALUE=value)


def _port(ports, name, direction, *, conns=(), sigis="undef", left=None, clk_hz=None, signame=None):
    attrs = {}
    if clk_hz is not None:
        attrs["CLKFREQUENCY"] = int(clk_hz)
    attrs["DIR"] = direction
    if left is not None:
        attrs["LEFT"] = left
    attrs["NAME"] = name
    if left is not None:
        attrs["RIGHT"] = 0
    attrs["SIGIS"] = sigis
    if signame:
        attrs["SIGNAME"] = signame
    p = _sub(ports, "PORT", **attrs)
    if conns:
        c = _sub(p, "CONNECTIONS")
        for inst, port in conns:
            _sub(c, "CONNECTION", INSTANCE=inst, PORT=port)
    return p


def _bus(bifs, name, btype, vlnv, params=(), portmaps=(), busname=None, datawidth=None):
    attrs = {"BUSNAME": busname or "__NOC__"}
    if datawidth:
        attrs["DATAWIDTH"] = datawidth
    attrs.update(NAME=name, TYPE=btype, VLNV=vlnv)
    b = _sub(bifs, "BUSINTERFACE", **attrs)
    for k, v in params:
        _sub(b, "PARAMETER", NAME=k, VALUE=v)
    pm = _sub(b, "PORTMAPS")
    for logical, physical in portmaps:
        _sub(pm, "PORTMAP", LOGICAL=logical, PHYSICAL=physical)
    return b


def _registers(module, interface, regs, range_=ADDR_RANGE):
    blocks = _sub(module, "ADDRESSBLOCKS")
    ab = _sub(blocks, "ADDRESSBLOCK", ACCESS="read-write", INTERFACE=interface, NAME="Reg",
              RANGE=range_, USAGE="register")
    rs = _sub(ab, "REGISTERS")
    for name, offset in regs:
        r = _sub(rs, "REGISTER", NAME=name)
        for k, v in (("ADDRESS_OFFSET", hex(offset)), ("SIZE", 32), ("ACCESS", "read-write"),
                     ("IS_ENABLED", "true"), ("RESET_VALUE", "0x0")):
            _sub(r, "PROPERTY", NAME=k, VALUE=v)


def _memrange(mm, *, block, base, high, instance, master, memtype, slave):
    _sub(mm, "MEMRANGE", ADDRESSBLOCK=block, BASENAME="C_BASEADDR", BASEVALUE=f"0x{base:08X}",
         HIGHNAME="C_HIGHADDR", HIGHVALUE=f"0x{high:08X}", INSTANCE=instance, IS_DATA="TRUE",
         IS_INSTRUCTION="TRUE", MASTERBUSINTERFACE=master, MEMTYPE=memtype, SLAVEBUSINTERFACE=slave)


def generate_hwh(meta: AccelMeta, board, design_name: str = "flipq",
                 vivado_version: str = "2022.1") -> str:
    """The .hwh text for flipq's design described by ``meta`` on ``board``."""
    ultra = board.family == "zynq_ultra"
    ps = ZUPS_NAME if ultra else PS_NAME
    fclk_port = "pl_clk0" if ultra else "FCLK_CLK0"
    gp_port = "M_AXI_HPM0_LPD" if ultra else "M_AXI_GP0"
    hp_port = board.hp_port
    dma, accel = meta.dma.name, meta.ip.name
    pll_mhz = board.pll_mhz
    clocks = pl_clock_divisors(meta.fclk_mhz, pll_mhz, board.divisor_max)
    clk_hz = round(clocks.fclk_mhz * 1e6)
    sw = meta.dma.data_width

    root = ET.Element("EDKSYSTEM", EDWVERSION="1.2", TIMESTAMP="Thu Jan  1 00:00:00 2026",
                      VIVADOVERSION=vivado_version)
    _sub(root, "SYSTEMINFO", ARCH="zynquplus" if ultra else "zynq", DEVICE=board.hwh_device,
         NAME=design_name, PACKAGE=board.hwh_package, SPEEDGRADE=board.hwh_speedgrade)
    _sub(root, "EXTERNALPORTS")
    _sub(root, "EXTERNALINTERFACES")
    modules = _sub(root, "MODULES")

    # -- processing system ------------------------------------------------------------------
    m = _sub(modules, "MODULE", CONFIGURABLE="TRUE", COREREVISION="6", FULLNAME=f"/{ps}",
             HWVERSION="3.3" if ultra else "5.5", INSTANCE=ps, IPTYPE="PERIPHERAL", IS_ENABLE="1",
             IS_PL="FALSE", MODTYPE=board.ps, VLNV=ZUPS_VLNV if ultra else PS7_VLNV)
    blocks = _sub(m, "ADDRESSBLOCKS")
    _sub(blocks, "ADDRESSBLOCK", ACCESS="", INTERFACE=hp_port,
         NAME=f"{hp_port}_DDR_LOWOCM" if not ultra else "HP0_DDR_LOW",
         RANGE=board.ddr_mb * 1024 * 1024, USAGE="memory")
    if ultra:
        params = [("PSU__CRL_APB__PL0_REF_CTRL__SRCSEL", "IOPLL"),
                  ("PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ", f"{meta.fclk_mhz:g}"),
                  ("PSU__CRL_APB__PL0_REF_CTRL__ACT_FREQMHZ", f"{clocks.fclk_mhz:.6f}"),
                  ("PSU__CRL_APB__IOPLL_CTRL__FRACFREQ", f"{pll_mhz:g}")]
        for i in range(4):
            params += [(f"PSU__FPGA_PL{i}_ENABLE", "1" if i == 0 else "0"),
                       (f"PSU__CRL_APB__PL{i}_REF_CTRL__DIVISOR0", clocks.divisor0 if i == 0 else 4),
                       (f"PSU__CRL_APB__PL{i}_REF_CTRL__DIVISOR1", clocks.divisor1 if i == 0 else 1)]
        params += [("PSU__USE__M_AXI_GP2", "1"), ("PSU__USE__S_AXI_GP2", "1")]
    else:
        params = [("PCW_CRYSTAL_PERIPHERAL_FREQMHZ", "50"),
                  ("PCW_APU_PERIPHERAL_FREQMHZ", f"{board.cpu_mhz:g}"),
                  ("PCW_ARMPLL_CTRL_FBDIV", "26"), ("PCW_IOPLL_CTRL_FBDIV", "20"),
                  ("PCW_IO_IO_PLL_FREQMHZ", f"{pll_mhz:.3f}"),
                  ("PCW_FPGA0_PERIPHERAL_FREQMHZ", f"{meta.fclk_mhz:g}"),
                  ("PCW_ACT_FPGA0_PERIPHERAL_FREQMHZ", f"{clocks.fclk_mhz:.6f}")]
        for i in range(4):
            params += [(f"PCW_FCLK{i}_PERIPHERAL_DIVISOR0", clocks.divisor0 if i == 0 else 1),
                       (f"PCW_FCLK{i}_PERIPHERAL_DIVISOR1", clocks.divisor1 if i == 0 else 1),
                       (f"PCW_FCLK{i}_PERIPHERAL_CLKSRC", "IO PLL"),
                       (f"PCW_FPGA_FCLK{i}_ENABLE", "1" if i == 0 else "0")]
        params += [("PCW_USE_M_AXI_GP0", "1"), ("PCW_USE_S_AXI_HP0", "1"),
                   ("PCW_S_AXI_HP0_DATA_WIDTH", "64")]
    _params(m, params + [("EDK_IPTYPE", "PERIPHERAL")])
    ports = _sub(m, "PORTS")
    clk_sinks = [(dma, "s_axi_lite_aclk"), (dma, "m_axi_mm2s_aclk"), (dma, "m_axi_s2mm_aclk"),
                 (accel, "ap_clk")]
    _port(ports, fclk_port, "O", sigis="clk", clk_hz=clk_hz, signame=f"{ps}_{fclk_port}",
          conns=clk_sinks)
    bifs = _sub(m, "BUSINTERFACES")
    _bus(bifs, gp_port, "MASTER", "xilinx.com:interface:aximm:1.0", busname=f"{ps}_{gp_port}",
         datawidth=32, params=[("PROTOCOL", "AXI3" if not ultra else "AXI4"),
                               ("FREQ_HZ", clk_hz), ("HAS_QOS", 0)])
    _bus(bifs, hp_port, "SLAVE", "xilinx.com:interface:aximm:1.0", busname="axi_mem_intercon_M00_AXI",
         datawidth=64, params=[("PROTOCOL", "AXI3" if not ultra else "AXI4"), ("FREQ_HZ", clk_hz)])
    mm = _sub(m, "MEMORYMAP")
    _memrange(mm, block="Reg", base=DMA_BASE, high=DMA_BASE + ADDR_RANGE - 1, instance=dma,
              master=gp_port, memtype="REGISTER", slave="S_AXI_LITE")
    _memrange(mm, block="Reg", base=ACCEL_BASE, high=ACCEL_BASE + ADDR_RANGE - 1, instance=accel,
              master=gp_port, memtype="REGISTER", slave="s_axi_control")

    # -- AXI DMA (simple mode) -------------------------------------------------------------
    m = _sub(modules, "MODULE", COREREVISION="19", FULLNAME=f"/{dma}", HWVERSION="7.1", INSTANCE=dma,
             IPTYPE="PERIPHERAL", IS_ENABLE="1", MODCLASS="PERIPHERAL", MODTYPE="axi_dma",
             VLNV=DMA_VLNV)
    _registers(m, "S_AXI_LITE", DMA_REGISTERS)
    lw = meta.dma.length_width
    dma_params = {
        "include_sg": 0, "sg_length_width": lw, "micro_dma": 0, "enable_multi_channel": 0,
        "include_mm2s": 1, "m_axi_mm2s_data_width": sw, "m_axis_mm2s_tdata_width": sw,
        "include_mm2s_dre": 0, "mm2s_burst_size": 16, "include_s2mm": 1,
        "m_axi_s2mm_data_width": sw, "s_axis_s2mm_tdata_width": sw, "include_s2mm_dre": 0,
        "s2mm_burst_size": 16, "addr_width": 32,
    }
    # Vivado writes each DMA parameter twice, upper- and lower-case; pynq's driver reads the
    # lower-case ones (c_include_sg, c_sg_length_width, ...).
    _params(m, [(f"C_{k.upper()}", v) for k, v in dma_params.items()]
            + [("C_FAMILY", "zynquplus" if ultra else "zynq"),
               ("Component_Name", f"{design_name}_{dma}_0")]
            + [(f"c_{k}", v) for k, v in dma_params.items()]
            + [("EDK_IPTYPE", "PERIPHERAL"), ("C_BASEADDR", f"0x{DMA_BASE:08X}"),
               ("C_HIGHADDR", f"0x{DMA_BASE + ADDR_RANGE - 1:08X}")])
    ports = _sub(m, "PORTS")
    sig = f"{ps}_{fclk_port}"
    for p in ("s_axi_lite_aclk", "m_axi_mm2s_aclk", "m_axi_s2mm_aclk"):
        _port(ports, p, "I", sigis="clk", clk_hz=clk_hz, signame=sig, conns=[(ps, fclk_port)])
    _port(ports, "axi_resetn", "I", sigis="rst")
    _port(ports, "m_axis_mm2s_tdata", "O", left=sw - 1, signame=f"{dma}_M_AXIS_MM2S_tdata",
          conns=[(accel, "in_r_TDATA")])
    _port(ports, "m_axis_mm2s_tvalid", "O", conns=[(accel, "in_r_TVALID")])
    _port(ports, "m_axis_mm2s_tready", "I", conns=[(accel, "in_r_TREADY")])
    _port(ports, "m_axis_mm2s_tlast", "O", conns=[(accel, "in_r_TLAST")])
    _port(ports, "s_axis_s2mm_tdata", "I", left=sw - 1, signame=f"{accel}_out_r_TDATA",
          conns=[(accel, "out_r_TDATA")])
    _port(ports, "s_axis_s2mm_tvalid", "I", conns=[(accel, "out_r_TVALID")])
    _port(ports, "s_axis_s2mm_tready", "O", conns=[(accel, "out_r_TREADY")])
    _port(ports, "s_axis_s2mm_tlast", "I", conns=[(accel, "out_r_TLAST")])
    # No interrupt lines: the host polls DMASR (pynq on a PS7 needs an axi_intc otherwise).
    bifs = _sub(m, "BUSINTERFACES")
    _bus(bifs, "S_AXI_LITE", "SLAVE", "xilinx.com:interface:aximm:1.0", busname=f"{ps}_{gp_port}",
         datawidth=32, params=[("PROTOCOL", "AXI4LITE"), ("FREQ_HZ", clk_hz)])
    for name in ("M_AXI_MM2S", "M_AXI_S2MM"):
        _bus(bifs, name, "MASTER", "xilinx.com:interface:aximm:1.0", busname=f"{dma}_{name}",
             datawidth=sw, params=[("PROTOCOL", "AXI4"), ("FREQ_HZ", clk_hz)])
    axis = [("TDATA_NUM_BYTES", sw // 8), ("HAS_TLAST", 1), ("HAS_TREADY", 1), ("FREQ_HZ", clk_hz)]
    _bus(bifs, "M_AXIS_MM2S", "INITIATOR", "xilinx.com:interface:axis:1.0", busname=f"{dma}_M_AXIS_MM2S",
         params=axis, portmaps=[("TDATA", "m_axis_mm2s_tdata"), ("TVALID", "m_axis_mm2s_tvalid"),
                                ("TREADY", "m_axis_mm2s_tready"), ("TLAST", "m_axis_mm2s_tlast")])
    _bus(bifs, "S_AXIS_S2MM", "TARGET", "xilinx.com:interface:axis:1.0", busname=f"{accel}_out_r",
         params=axis, portmaps=[("TDATA", "s_axis_s2mm_tdata"), ("TVALID", "s_axis_s2mm_tvalid"),
                                ("TREADY", "s_axis_s2mm_tready"), ("TLAST", "s_axis_s2mm_tlast")])
    mm = _sub(m, "MEMORYMAP")
    ddr_high = board.ddr_mb * 1024 * 1024 - 1
    for master in ("M_AXI_MM2S", "M_AXI_S2MM"):
        _memrange(mm, block=f"{hp_port}_DDR_LOWOCM", base=0, high=ddr_high, instance=ps,
                  master=master, memtype="MEMORY", slave=hp_port)

    # -- the flipq accelerator (Vitis HLS IP) ----------------------------------------------
    vlnv = meta.ip.vlnv
    m = _sub(modules, "MODULE", COREREVISION="1", FULLNAME=f"/{accel}", HWVERSION="1.0",
             INSTANCE=accel, IPTYPE="PERIPHERAL", IS_ENABLE="1", MODCLASS="PERIPHERAL",
             MODTYPE=vlnv.split(":")[2], VLNV=vlnv)
    regs = list(HLS_CONTROL_REGISTERS)
    regs.append(("planes", meta.ip.planes_offset))
    regs += [(k, v) for k, v in meta.ip.control.items() if k != "ap_ctrl"]
    _registers(m, "s_axi_control", regs)
    _params(m, [("C_S_AXI_CONTROL_ADDR_WIDTH", 6), ("C_S_AXI_CONTROL_DATA_WIDTH", 32),
                ("Component_Name", f"{design_name}_{accel}_0"), ("clk_period", f"{1e3 / clocks.fclk_mhz:g}"),
                ("EDK_IPTYPE", "PERIPHERAL"), ("C_S_AXI_CONTROL_BASEADDR", f"0x{ACCEL_BASE:08X}"),
                ("C_S_AXI_CONTROL_HIGHADDR", f"0x{ACCEL_BASE + ADDR_RANGE - 1:08X}")])
    ports = _sub(m, "PORTS")
    _port(ports, "ap_clk", "I", sigis="clk", clk_hz=clk_hz, signame=sig, conns=[(ps, fclk_port)])
    _port(ports, "ap_rst_n", "I", sigis="rst")
    _port(ports, "in_r_TDATA", "I", left=sw - 1, conns=[(dma, "m_axis_mm2s_tdata")])
    _port(ports, "in_r_TVALID", "I", conns=[(dma, "m_axis_mm2s_tvalid")])
    _port(ports, "in_r_TREADY", "O", conns=[(dma, "m_axis_mm2s_tready")])
    _port(ports, "in_r_TLAST", "I", conns=[(dma, "m_axis_mm2s_tlast")])
    _port(ports, "out_r_TDATA", "O", left=sw - 1, conns=[(dma, "s_axis_s2mm_tdata")])
    _port(ports, "out_r_TVALID", "O", conns=[(dma, "s_axis_s2mm_tvalid")])
    _port(ports, "out_r_TREADY", "I", conns=[(dma, "s_axis_s2mm_tready")])
    _port(ports, "out_r_TLAST", "O", conns=[(dma, "s_axis_s2mm_tlast")])
    _port(ports, "interrupt", "O", sigis="INTERRUPT")
    bifs = _sub(m, "BUSINTERFACES")
    _bus(bifs, "s_axi_control", "SLAVE", "xilinx.com:interface:aximm:1.0", busname=f"{ps}_{gp_port}",
         datawidth=32, params=[("PROTOCOL", "AXI4LITE"), ("FREQ_HZ", clk_hz)])
    _bus(bifs, "in_r", "TARGET", "xilinx.com:interface:axis:1.0", busname=f"{dma}_M_AXIS_MM2S",
         params=axis, portmaps=[("TDATA", "in_r_TDATA"), ("TVALID", "in_r_TVALID"),
                                ("TREADY", "in_r_TREADY"), ("TLAST", "in_r_TLAST")])
    _bus(bifs, "out_r", "INITIATOR", "xilinx.com:interface:axis:1.0", busname=f"{accel}_out_r",
         params=axis, portmaps=[("TDATA", "out_r_TDATA"), ("TVALID", "out_r_TVALID"),
                                ("TREADY", "out_r_TREADY"), ("TLAST", "out_r_TLAST")])

    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8" standalone="no" ?>\n' + \
        ET.tostring(root, encoding="unicode") + "\n"
