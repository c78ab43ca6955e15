# Zynq UltraScale+ processing system with the board preset; pl_clk0 feeds the whole PL,
# at a frequency the IOPLL and two 6-bit divisors give (rounded by flipq: @fclk_divisors@).
create_bd_cell -type ip -vlnv xilinx.com:ip:zynq_ultra_ps_e @ps@
apply_bd_automation -rule xilinx.com:bd_rule:zynq_ultra_ps_e -config {apply_board_preset "1"} [get_bd_cells @ps@]
set_property -dict [list \
  CONFIG.PSU__CRL_APB__PL0_REF_CTRL__SRCSEL {IOPLL} \
  CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ {@fclk_mhz@} \
  CONFIG.PSU__USE__M_AXI_GP0 {0} \
  CONFIG.PSU__USE__M_AXI_GP1 {0} \
  CONFIG.PSU__USE__M_AXI_GP2 {1} \
  CONFIG.PSU__USE__S_AXI_GP2 {1} \
] [get_bd_cells @ps@]
