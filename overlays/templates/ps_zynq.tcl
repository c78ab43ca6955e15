# Zynq-7000 processing system with the board preset; fclk0 feeds the whole PL,
# at a frequency the IO PLL and two 6-bit divisors give (rounded by flipq: @fclk_divisors@).
create_bd_cell -type ip -vlnv xilinx.com:ip:processing_system7:5.5 @ps@
apply_bd_automation -rule xilinx.com:bd_rule:processing_system7 -config {make_external "FIXED_IO, DDR" apply_board_preset "1" Master "Disable" Slave "Disable"} [get_bd_cells @ps@]
set_property -dict [list \
  CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ {@fclk_mhz@} \
  CONFIG.PCW_FCLK0_PERIPHERAL_CLKSRC {IO PLL} \
  CONFIG.PCW_EN_CLK0_PORT {1} \
  CONFIG.PCW_USE_M_AXI_GP0 {1} \
  CONFIG.PCW_USE_S_AXI_HP0 {1} \
  CONFIG.PCW_S_AXI_HP0_DATA_WIDTH {64} \
] [get_bd_cells @ps@]
