// Board wrapper of the RTL twin: the generated accelerator flipq_accel behind the same ports,
// register map and ap_ctrl_hs handshake as the Vitis HLS IP flipq_top, so the block design, the
// .hwh check, accel.json and flipq.host.pynq_backend drive either IP the same way.
//
// Ports are named as Vitis HLS names them, so Vivado's IP packager (and the explicit interface
// definitions in overlays/templates/package_rtl_ip.tcl) see AXI4-Lite s_axi_control, AXI4-Stream
// slave in_r and master out_r, clock ap_clk, active-low reset ap_rst_n and a level interrupt.
// TKEEP/TSTRB exist because the AXI DMA's S2MM counts received bytes from TKEEP: leaving it
// unconnected would make the received length depend on a tool's default tie-off.
//
// Register map (bundle control, as Vitis HLS generates it; host/accelmeta.py documents the same):
//   0x00 ap_ctrl  bit 0 ap_start (R/W; set by writing 1, cleared when the run is accepted)
//                 bit 1 ap_done  (R; clear on read)   bit 2 ap_idle (R)
//                 bit 3 ap_ready (R; clear on read)   bit 7 auto_restart (reads 0: not offered)
//   0x04 GIE      bit 0 global interrupt enable
//   0x08 IER      bit 0 ap_done, bit 1 ap_ready interrupt enables
//   0x0C ISR      bit 0 ap_done, bit 1 ap_ready (set by the event when enabled, toggle on write)
//   0x10 planes   32 bits (0x14 reserved)
//   0x18 n_samples 32 bits (0x1C reserved)
//
// A run: ap_start while idle is accepted in one cycle (ap_ready), which latches planes and
// n_samples; the wrapper then admits exactly n_samples * IN_WORDS words from in_r into the
// accelerator and passes out exactly n_samples * OUT_WORDS words on out_r, TLAST on the last
// one only (it ends the DMA's S2MM transfer); ap_done and ap_idle rise as that word moves. With
// n_samples = 0 nothing is read or written, no TLAST is sent and ap_done follows acceptance at
// once, as the HLS loop with zero iterations does. Outside a run both streams are closed, so
// words the DMA offers early wait for ap_start and a surplus word is never swallowed.
//
// planes reaches the accelerator as 4 bits; a written value above 15 means "all planes" (as 0
// and anything above the stored planes do), not its low 4 bits.
`default_nettype none

module flipq_axi_top #(
    parameter integer WORD = 32,
    parameter integer IN_WORDS = 1,
    parameter integer OUT_WORDS = 1
) (
    input  wire                ap_clk,
    input  wire                ap_rst_n,

    input  wire [4:0]          s_axi_control_AWADDR,
    input  wire                s_axi_control_AWVALID,
    output wire                s_axi_control_AWREADY,
    input  wire [31:0]         s_axi_control_WDATA,
    input  wire [3:0]          s_axi_control_WSTRB,
    input  wire                s_axi_control_WVALID,
    output wire                s_axi_control_WREADY,
    output wire [1:0]          s_axi_control_BRESP,
    output wire                s_axi_control_BVALID,
    input  wire                s_axi_control_BREADY,
    input  wire [4:0]          s_axi_control_ARADDR,
    input  wire                s_axi_control_ARVALID,
    output wire                s_axi_control_ARREADY,
    output wire [31:0]         s_axi_control_RDATA,
    output wire [1:0]          s_axi_control_RRESP,
    output wire                s_axi_control_RVALID,
    input  wire                s_axi_control_RREADY,

    input  wire [WORD-1:0]     in_r_TDATA,
    input  wire [WORD/8-1:0]   in_r_TKEEP,
    input  wire [WORD/8-1:0]   in_r_TSTRB,
    input  wire                in_r_TVALID,
    output wire                in_r_TREADY,
    input  wire                in_r_TLAST,

    output wire [WORD-1:0]     out_r_TDATA,
    output wire [WORD/8-1:0]   out_r_TKEEP,
    output wire [WORD/8-1:0]   out_r_TSTRB,
    output wire                out_r_TVALID,
    input  wire                out_r_TREADY,
    output wire                out_r_TLAST,

    output wire                interrupt
);
    function integer clog2;
        input integer v;
        integer r;
        begin
            r = 0;
            while ((1 << r) < v) r = r + 1;
            clog2 = (r < 1) ? 1 : r;
        end
    endfunction

    localparam [4:0] ADDR_AP_CTRL = 5'h00, ADDR_GIE = 5'h04, ADDR_IER = 5'h08, ADDR_ISR = 5'h0C,
                     ADDR_PLANES = 5'h10, ADDR_N_SAMPLES = 5'h18;
    localparam integer IW = clog2(IN_WORDS);
    localparam integer OW = clog2(OUT_WORDS);

    wire rst = ~ap_rst_n;

    // ---- AXI4-Lite: one write and one read in flight, as the HLS slave; OKAY always (every
    // address decodes, reserved ones read 0 and ignore writes, as in the HLS IP).
    localparam [1:0] WR_IDLE = 2'd0, WR_DATA = 2'd1, WR_RESP = 2'd2;
    reg [1:0] wstate;
    reg [4:0] waddr;
    wire w_hs = s_axi_control_WVALID & s_axi_control_WREADY;
    assign s_axi_control_AWREADY = (wstate == WR_IDLE);
    assign s_axi_control_WREADY = (wstate == WR_DATA);
    assign s_axi_control_BVALID = (wstate == WR_RESP);
    assign s_axi_control_BRESP = 2'b00;

    always @(posedge ap_clk) begin
        if (rst) begin
            wstate <= WR_IDLE;
            waddr <= 5'd0;
        end else begin
            case (wstate)
                WR_IDLE: if (s_axi_control_AWVALID) begin
                    wstate <= WR_DATA;
                    waddr <= {s_axi_control_AWADDR[4:2], 2'b00};
                end
                WR_DATA: if (s_axi_control_WVALID) wstate <= WR_RESP;
                WR_RESP: if (s_axi_control_BREADY) wstate <= WR_IDLE;
                default: wstate <= WR_IDLE;
            endcase
        end
    end

    localparam R_IDLE = 1'b0, R_DATA = 1'b1;
    reg rstate;
    reg [31:0] rdata;
    wire [4:0] raddr = {s_axi_control_ARADDR[4:2], 2'b00};
    wire ar_hs = s_axi_control_ARVALID & s_axi_control_ARREADY;
    assign s_axi_control_ARREADY = (rstate == R_IDLE);
    assign s_axi_control_RVALID = (rstate == R_DATA);
    assign s_axi_control_RDATA = rdata;
    assign s_axi_control_RRESP = 2'b00;

    // ---- registers
    reg        int_ap_start, int_ap_done, int_ap_ready, int_gie;
    reg [1:0]  int_ier, int_isr;
    reg [31:0] int_planes, int_n_samples;
    wire       ap_idle, ap_done, ap_ready;

    function [31:0] merge;  // a write under WSTRB: only the strobed bytes change
        input [31:0] old;
        input [31:0] data;
        input [3:0] strb;
        integer b;
        begin
            for (b = 0; b < 4; b = b + 1)
                merge[b*8 +: 8] = strb[b] ? data[b*8 +: 8] : old[b*8 +: 8];
        end
    endfunction

    always @(posedge ap_clk) begin
        if (rst) begin
            rstate <= R_IDLE;
            rdata <= 32'd0;
        end else if (ar_hs) begin
            rstate <= R_DATA;
            case (raddr)
                ADDR_AP_CTRL:   rdata <= {28'd0, int_ap_ready, ap_idle, int_ap_done, int_ap_start};
                ADDR_GIE:       rdata <= {31'd0, int_gie};
                ADDR_IER:       rdata <= {30'd0, int_ier};
                ADDR_ISR:       rdata <= {30'd0, int_isr};
                ADDR_PLANES:    rdata <= int_planes;
                ADDR_N_SAMPLES: rdata <= int_n_samples;
                default:        rdata <= 32'd0;
            endcase
        end else if (rstate == R_DATA && s_axi_control_RREADY) begin
            rstate <= R_IDLE;
        end
    end

    wire ctrl_write = w_hs && waddr == ADDR_AP_CTRL && s_axi_control_WSTRB[0];
    wire ctrl_read = ar_hs && raddr == ADDR_AP_CTRL;

    always @(posedge ap_clk) begin
        if (rst) begin
            int_ap_start <= 1'b0;
            int_ap_done <= 1'b0;
            int_ap_ready <= 1'b0;
            int_gie <= 1'b0;
            int_ier <= 2'b00;
            int_isr <= 2'b00;
            int_planes <= 32'd0;
            int_n_samples <= 32'd0;
        end else begin
            // the handshake wins over a write in the same cycle: the start it clears was seen
            if (ap_ready) int_ap_start <= 1'b0;
            else if (ctrl_write && s_axi_control_WDATA[0]) int_ap_start <= 1'b1;
            // an event in the cycle of the clearing read stays visible for the next read
            if (ap_done) int_ap_done <= 1'b1;
            else if (ctrl_read) int_ap_done <= 1'b0;
            if (ap_ready) int_ap_ready <= 1'b1;
            else if (ctrl_read) int_ap_ready <= 1'b0;
            if (w_hs && waddr == ADDR_GIE && s_axi_control_WSTRB[0]) int_gie <= s_axi_control_WDATA[0];
            if (w_hs && waddr == ADDR_IER && s_axi_control_WSTRB[0]) int_ier <= s_axi_control_WDATA[1:0];
            if (int_ier[0] && ap_done) int_isr[0] <= 1'b1;
            else if (w_hs && waddr == ADDR_ISR && s_axi_control_WSTRB[0])
                int_isr[0] <= int_isr[0] ^ s_axi_control_WDATA[0];
            if (int_ier[1] && ap_ready) int_isr[1] <= 1'b1;
            else if (w_hs && waddr == ADDR_ISR && s_axi_control_WSTRB[0])
                int_isr[1] <= int_isr[1] ^ s_axi_control_WDATA[1];
            if (w_hs && waddr == ADDR_PLANES)
                int_planes <= merge(int_planes, s_axi_control_WDATA, s_axi_control_WSTRB);
            if (w_hs && waddr == ADDR_N_SAMPLES)
                int_n_samples <= merge(int_n_samples, s_axi_control_WDATA, s_axi_control_WSTRB);
        end
    end

    assign interrupt = int_gie & (|int_isr);

    // ---- the run: sample counters and a word-in-sample counter per side, so the word counts
    // n_samples * IN_WORDS / OUT_WORDS need no multiplier and no 64-bit product.
    reg          running;
    reg [3:0]    run_planes;
    reg [31:0]   in_left, out_left;  // samples still to admit / to pass out
    reg [IW-1:0] in_word;
    reg [OW-1:0] out_word;

    wire s_ready, m_valid;
    wire [WORD-1:0] m_data;
    wire in_open = running && in_left != 32'd0;
    wire in_beat = in_r_TVALID && in_r_TREADY;
    wire out_beat = out_r_TVALID && out_r_TREADY;
    wire out_last = out_left == 32'd1 && out_word == OUT_WORDS - 1;

    assign ap_idle = ~running;
    assign ap_ready = int_ap_start && !running;
    assign ap_done = (ap_ready && int_n_samples == 32'd0) || (out_beat && out_last);

    always @(posedge ap_clk) begin
        if (rst) begin
            running <= 1'b0;
            run_planes <= 4'd0;
            in_left <= 32'd0;
            out_left <= 32'd0;
            in_word <= {IW{1'b0}};
            out_word <= {OW{1'b0}};
        end else if (ap_ready) begin
            running <= int_n_samples != 32'd0;
            run_planes <= (int_planes[31:4] != 28'd0) ? 4'd0 : int_planes[3:0];
            in_left <= int_n_samples;
            out_left <= int_n_samples;
            in_word <= {IW{1'b0}};
            out_word <= {OW{1'b0}};
        end else begin
            if (in_beat) begin
                if (in_word == IN_WORDS - 1) begin
                    in_word <= {IW{1'b0}};
                    in_left <= in_left - 32'd1;
                end else begin
                    in_word <= in_word + 1'b1;
                end
            end
            if (out_beat) begin
                if (out_word == OUT_WORDS - 1) begin
                    out_word <= {OW{1'b0}};
                    out_left <= out_left - 32'd1;
                end else begin
                    out_word <= out_word + 1'b1;
                end
                if (out_last) running <= 1'b0;
            end
        end
    end

    assign in_r_TREADY = in_open && s_ready;
    assign out_r_TVALID = running && m_valid;
    assign out_r_TDATA = m_data;
    assign out_r_TLAST = out_last;
    assign out_r_TKEEP = {(WORD/8){1'b1}};
    assign out_r_TSTRB = {(WORD/8){1'b1}};

    flipq_accel accel (
        .clk(ap_clk),
        .rst(rst),
        .planes(run_planes),
        .s_data(in_r_TDATA),
        .s_valid(in_r_TVALID && in_open),
        .s_ready(s_ready),
        .m_data(m_data),
        .m_valid(m_valid),
        .m_ready(out_r_TREADY && running)
    );

    // in_r's TKEEP/TSTRB/TLAST: the DMA sends whole words and the run counts them itself; the
    // low address bits: registers are whole words, as in the HLS slave
    wire unused = &{1'b0, in_r_TKEEP, in_r_TSTRB, in_r_TLAST, s_axi_control_AWADDR[1:0],
                    s_axi_control_ARADDR[1:0]};
endmodule

`default_nettype wire
