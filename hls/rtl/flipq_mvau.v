// flipq_mvau: the bit-serial matrix-vector unit of the RTL twin (docs/rtl.md, "flipq_mvau").
//
// Two independent sides meet at a row buffer of three slots of R rows (triple buffering):
//   input side   : in -> rbuf slot `wh`, one row a beat; a slot is `full` once its R rows are in.
//   compute side : counters (block, step in block) -> ROM read -> row read -> lane AND + adder tree
//                  (one register a level) -> shift/accumulate -> output step (2 stages) -> out.
// The compute side issues one step a cycle while a vector's rows are buffered and the output is
// not back-pressured; every compute register shares the enable `en`, so a stalled output freezes
// the whole pipeline in place (bubbles included) and nothing is lost or duplicated.
//
// Cycle behaviour (steady state, input always valid, output always ready): a vector takes
// max(T, R) cycles, T its steps at the latched `planes`. A slot goes back to the input side two
// cycles after its vector's last step issues (once that step has read its row); with two slots
// that delay cost up to 2 cycles a vector where T and R are within 2 of each other, with three the
// input side fills the third slot meanwhile. The next vector's first step issues the cycle after
// the previous vector's last one whenever its rows are in (no bubble between blocks or vectors). Latency from a block's last step issuing to its output beat: 5 + max(1, clog2(SIMD)).
// No output depends combinationally on an input: out_ready drives only the internal enable.
`default_nettype none

module flipq_mvau #(
    parameter integer SIMD = 4,
    parameter integer PE = 1,
    parameter integer R = 1,           // rows a vector (K / SIMD)
    parameter integer NB = 1,          // column blocks (N / PE)
    parameter integer B = 2,           // stored planes
    parameter integer T0 = 1,          // steps of a vector at full precision (ROM depth), >= 1
    parameter integer AW = 4,
    parameter integer A_SIGNED = 0,
    parameter integer PSUM_W = 8,
    parameter integer ACC_W = 16,
    parameter integer OUT_W = 16,
    parameter integer FULL_PLANES = 0,
    parameter integer DW = 0,          // 1: a depthwise layer's vector-vector unit (SIMD = PE): PE p
                                       // takes lane p alone, where its weight bit is; no adder tree
    parameter integer MODE = 0,        // 0 raw accumulator, 1 requantize, 2 thresholds
    parameter integer RQ_RELU = 0,
    parameter integer RQ_SHIFT = 0,    // > 0: right shift (round half to even), <= 0: left shift
    parameter integer RQ_MIN = 0,
    parameter integer RQ_MAX = 0,
    parameter integer NTHR = 1,
    parameter integer THR_W = 17,      // ACC_W + 1
    parameter W_FILE = "",
    parameter S_FILE = "",
    parameter BLK_FILE = "",
    parameter BIAS_FILE = "",
    parameter THR_FILE = "",
    parameter DESC_FILE = ""
) (
    input  wire                   clk,
    input  wire                   rst,
    input  wire [3:0]             planes,
    input  wire [SIMD*AW-1:0]     in_data,
    input  wire                   in_valid,
    output wire                   in_ready,
    output reg  [PE*OUT_W-1:0]    out_data,
    output reg                    out_valid,
    input  wire                   out_ready
);

    // ---------------------------------------------------------------- widths
    localparam integer RW = (R > 1) ? $clog2(R) : 1;          // row in a step word
    localparam integer PW = (B > 1) ? $clog2(B) : 1;          // plane in a step word
    localparam integer BW = $clog2(T0 + 1);                   // a block's first step
    localparam integer LW = BW;                               // a block's step count
    localparam integer BLK_W = BW + B * LW;
    localparam integer NBW = (NB > 1) ? $clog2(NB) : 1;
    localparam integer RBW = $clog2(3 * R);                   // row buffer address (three slots)
    localparam integer LV = (DW != 0) ? 0 : $clog2(SIMD);     // adder-tree levels
    localparam integer SP = 1 << LV;                          // lanes padded to a power of two
    localparam integer NN = (SP > 1) ? SP - 1 : 1;            // registered tree nodes a PE
    localparam integer TL = (LV > 0) ? LV : 1;                // tree latency
    localparam [3:0] B4 = B;
    localparam [PW-1:0] SIGN_PLANE = B - 1;

    // control word travelling with a step: valid, first/last step of its block, null step (a block
    // with no kept steps: adds nothing, still writes), last step of the vector, buffer half,
    // plane (filled in once the step ROM has been read), block (addresses bias/threshold ROMs)
    localparam integer C_V = 0, C_FIRST = 1, C_LAST = 2, C_NUL = 3, C_VLAST = 4, C_HALF = 5, C_PL = 7;
    localparam integer C_BLK = C_PL + PW;
    localparam integer CW = C_BLK + NBW;

    // ---------------------------------------------------------------- ROMs
    reg [PE*SIMD-1:0]    wrom   [0:T0-1];
    reg [PW+RW-1:0]      srom   [0:T0-1];
    reg [BLK_W-1:0]      blkrom [0:NB-1];
    reg [PE*ACC_W-1:0]   brom   [0:NB-1];
    // an unnamed file (the defaults) leaves its ROM zero, so the module elaborates on its own
    generate
        if (W_FILE != "") begin : g_wf
            initial $readmemh(W_FILE, wrom);
        end
        if (S_FILE != "") begin : g_sf
            initial $readmemh(S_FILE, srom);
        end
        if (BLK_FILE != "") begin : g_bf
            initial $readmemh(BLK_FILE, blkrom);
        end
        if (BIAS_FILE != "") begin : g_biasf
            initial $readmemh(BIAS_FILE, brom);
        end
    endgenerate

    // the whole compute side moves only when its output register can take a beat
    wire en = !out_valid || out_ready;

    // ---------------------------------------------------------------- input side
    reg [SIMD*AW-1:0] rbuf [0:3*R-1];
    reg [2:0]         full;
    reg [1:0]         wh;                  // slot being written: 0, 1, 2, 0, ...
    reg [RW-1:0]      wr;
    wire              wr_go = in_valid && in_ready;
    wire              wr_end = (wr == R - 1);
    wire [RBW-1:0]    waddr = (wh == 2'd2) ? wr + 2 * R : (wh == 2'd1) ? wr + R : wr;
    assign in_ready = !full[wh] && !rst;

    always @(posedge clk)
        if (wr_go) rbuf[waddr] <= in_data;

    always @(posedge clk) begin
        if (rst) begin
            wh <= 2'd0;
            wr <= {RW{1'b0}};
        end else if (wr_go) begin
            wr <= wr_end ? {RW{1'b0}} : wr + 1'b1;
            if (wr_end) wh <= (wh == 2'd2) ? 2'd0 : wh + 2'd1;
        end
    end

    // ---------------------------------------------------------------- S0: step counters
    reg              busy;                 // a vector is being issued
    reg [1:0]        ch;                   // its buffer slot
    reg [NBW-1:0]    blk;
    reg [LW-1:0]     stp;
    reg [3:0]        low_q;                // lowest plane, latched at the vector's first step
    reg [BLK_W-1:0]  cur;                  // BLK entry of `blk` (registered read)

    wire [3:0] low_port = (FULL_PLANES != 0 || planes == 4'd0 || planes >= B4) ? 4'd0 : B4 - planes;
    wire [3:0] low_now = busy ? low_q : low_port;
    reg  [LW-1:0] len;
    integer l;
    always @* begin
        len = {LW{1'b0}};
        for (l = 0; l < B; l = l + 1)
            if (low_now == l) len = cur[BW + l * LW +: LW];
    end

    wire          issue = en && !rst && (busy || full[ch]);
    wire          nul = (len == {LW{1'b0}});
    wire          blast = nul || (stp + 1'b1 == len);
    wire          vlast = blast && (blk == NB - 1);
    wire          adv = issue && blast;
    wire [BW-1:0] addr = cur[BW-1:0] + stp;
    wire [NBW-1:0] blk_nxt = vlast ? {NBW{1'b0}} : blk + 1'b1;
    wire [NBW-1:0] blk_rd = rst ? {NBW{1'b0}} : (adv ? blk_nxt : blk);

    always @(posedge clk)
        cur <= blkrom[blk_rd];

    always @(posedge clk) begin
        if (rst) begin
            busy <= 1'b0;
            ch <= 2'd0;
            blk <= {NBW{1'b0}};
            stp <= {LW{1'b0}};
            low_q <= 4'd0;
        end else if (issue) begin
            if (!busy) low_q <= low_port;
            busy <= 1'b1;
            if (blast) begin
                stp <= {LW{1'b0}};
                blk <= blk_nxt;
                if (vlast) begin
                    busy <= 1'b0;
                    ch <= (ch == 2'd2) ? 2'd0 : ch + 2'd1;
                end
            end else begin
                stp <= stp + 1'b1;
            end
        end
    end

    wire [CW-1:0] c0;
    assign c0[C_V] = issue;
    assign c0[C_FIRST] = (stp == {LW{1'b0}});
    assign c0[C_LAST] = blast;
    assign c0[C_NUL] = nul;
    assign c0[C_VLAST] = vlast;
    assign c0[C_HALF +: 2] = ch;
    assign c0[C_PL +: PW] = {PW{1'b0}};
    assign c0[C_BLK +: NBW] = blk;

    // ---------------------------------------------------------------- S1: weight and step ROMs
    reg [PE*SIMD-1:0] w1;
    reg [PW+RW-1:0]   s1;
    reg [CW-1:0]      c1;
    always @(posedge clk) begin
        if (en) begin
            w1 <= wrom[addr];
            s1 <= srom[addr];
        end
    end
    always @(posedge clk)
        if (rst) c1 <= {CW{1'b0}};
        else if (en) c1 <= c0;

    // release a half once its vector's last step has read its row (this edge)
    wire [RW-1:0]  row1 = s1[RW-1:0];
    wire [1:0]     slot1 = c1[C_HALF +: 2];
    wire [RBW-1:0] raddr = (slot1 == 2'd2) ? row1 + 2 * R : (slot1 == 2'd1) ? row1 + R : row1;
    wire           rel = en && c1[C_V] && c1[C_VLAST];
    wire [2:0]     set = (wr_go && wr_end) ? (3'b001 << wh) : 3'b000;
    wire [2:0]     clr = rel ? (3'b001 << slot1) : 3'b000;
    always @(posedge clk)
        full <= rst ? 3'b000 : (full | set) & ~clr;

    // ---------------------------------------------------------------- S2: row read
    reg [SIMD*AW-1:0] a2;
    reg [PE*SIMD-1:0] w2;
    reg [CW-1:0]      c2;
    always @(posedge clk) begin
        if (en) begin
            a2 <= rbuf[raddr];
            w2 <= w1;
        end
    end
    always @(posedge clk)
        if (rst) c2 <= {CW{1'b0}};
        else if (en) c2 <= {c1[CW-1:C_BLK], s1[RW +: PW], c1[C_PL-1:0]};

    // ---------------------------------------------------------------- S3: lane AND + adder tree
    // per PE a heap of 2*SP-1 values: [0, SP-1) registered sums, [SP-1, 2*SP-1) the lanes
    localparam integer HN = 2 * SP - 1;
    wire [PE*HN*PSUM_W-1:0] tv;
    reg  [PE*NN*PSUM_W-1:0] node;
    genvar gp, gi;
    generate
        for (gp = 0; gp < PE; gp = gp + 1) begin : g_pe
            for (gi = 0; gi < SP; gi = gi + 1) begin : g_lane
                if (gi < SIMD) begin : g_on
                    localparam integer LI = (DW != 0) ? gp : gi;  // the lane this input takes
                    wire [AW-1:0]     a = a2[LI * AW +: AW];
                    wire [PSUM_W-1:0] ext;
                    if (A_SIGNED != 0) begin : g_s
                        wire signed [AW-1:0] as = a;
                        assign ext = as;              // sign-extends
                    end else begin : g_u
                        assign ext = a;
                    end
                    assign tv[(gp * HN + SP - 1 + gi) * PSUM_W +: PSUM_W] =
                        w2[gp * SIMD + LI] ? ext : {PSUM_W{1'b0}};
                end else begin : g_off
                    assign tv[(gp * HN + SP - 1 + gi) * PSUM_W +: PSUM_W] = {PSUM_W{1'b0}};
                end
            end
            if (SP > 1) begin : g_sums
                for (gi = 0; gi < SP - 1; gi = gi + 1) begin : g_node
                    assign tv[(gp * HN + gi) * PSUM_W +: PSUM_W] = node[(gp * NN + gi) * PSUM_W +: PSUM_W];
                end
            end
        end
    endgenerate

    // sums are modulo 2**PSUM_W: the step's exact partial sum fits, so wrapped partial sums do not matter
    integer p, k;
    generate
        if (SP > 1) begin : g_tree
            always @(posedge clk)
                if (en)
                    for (p = 0; p < PE; p = p + 1)
                        for (k = 0; k < NN; k = k + 1)
                            node[(p * NN + k) * PSUM_W +: PSUM_W] <=
                                tv[(p * HN + 2 * k + 1) * PSUM_W +: PSUM_W]
                                + tv[(p * HN + 2 * k + 2) * PSUM_W +: PSUM_W];
        end else begin : g_lane1
            always @(posedge clk)
                if (en)
                    for (p = 0; p < PE; p = p + 1)
                        node[p * PSUM_W +: PSUM_W] <= tv[p * PSUM_W +: PSUM_W];
        end
    endgenerate

    // control beside the tree: cx[0] = c2 (tree inputs), cx[TL] = c3 (tree outputs)
    reg  [TL*CW-1:0]     cdl;
    wire [(TL+1)*CW-1:0] cx = {cdl, c2};
    wire [CW-1:0]        c3 = cx[TL * CW +: CW];
    wire [CW-1:0]        c3_pre = cx[(TL - 1) * CW +: CW];
    always @(posedge clk)
        if (rst) cdl <= {TL*CW{1'b0}};
        else if (en) cdl <= cx[TL*CW-1:0];

    // ---------------------------------------------------------------- S4: shift/accumulate
    reg [PE*ACC_W-1:0] bias_q;              // bias of c3's block, read one cycle ahead
    always @(posedge clk)
        if (en) bias_q <= brom[c3_pre[C_BLK +: NBW]];

    reg  [PE*ACC_W-1:0] acc;
    reg                 accv;               // acc holds a block's final sums
    wire [PW-1:0]       pl3 = c3[C_PL +: PW];
    wire                neg3 = (pl3 == SIGN_PLANE);
    wire [PE*ACC_W-1:0] acc_nxt;
    generate
        for (gp = 0; gp < PE; gp = gp + 1) begin : g_acc
            wire signed [PSUM_W-1:0] ps = node[gp * NN * PSUM_W +: PSUM_W];
            wire signed [ACC_W-1:0]  pse = ps;         // sign-extends
            wire [ACC_W-1:0]  sh = pse << pl3;
            wire [ACC_W-1:0]  base = c3[C_FIRST] ? bias_q[gp * ACC_W +: ACC_W] : acc[gp * ACC_W +: ACC_W];
            assign acc_nxt[gp * ACC_W +: ACC_W] = c3[C_NUL] ? base : neg3 ? base - sh : base + sh;
        end
    endgenerate

    always @(posedge clk)
        if (en && c3[C_V]) acc <= acc_nxt;
    always @(posedge clk)
        if (rst) accv <= 1'b0;
        else if (en) accv <= c3[C_V] && c3[C_LAST];

    // ---------------------------------------------------------------- S5, S6: output step
    localparam integer AS = (RQ_SHIFT < 0) ? -RQ_SHIFT : RQ_SHIFT;
    localparam integer XW = ACC_W + AS + 3;                 // requantized value before clamping
    localparam integer O1E = (MODE == 2) ? NTHR : (MODE == 1) ? XW : OUT_W;
    reg [PE*O1E-1:0] o1;
    reg              o1v;
    wire [PE*O1E-1:0] o1_nxt;
    wire [PE*OUT_W-1:0] out_nxt;

    always @(posedge clk)
        if (en) o1 <= o1_nxt;
    always @(posedge clk) begin
        if (rst) begin
            o1v <= 1'b0;
            out_valid <= 1'b0;
        end else if (en) begin
            o1v <= accv;
            out_valid <= o1v;
        end
    end
    always @(posedge clk)
        if (en) out_data <= out_nxt;

    generate
        if (MODE == 2) begin : g_thr
            // comparisons side by side (S5), their count by an adder tree (S6)
            localparam integer TLV = (NTHR > 1) ? $clog2(NTHR) : 0;
            localparam integer TP = 1 << TLV;
            localparam integer CNW = $clog2(NTHR + 1);
            reg [PE*NTHR*THR_W-1:0] trom [0:NB-1];
            reg [PE-1:0]            drom [0:NB-1];
            if (THR_FILE != "") begin : g_tf
                initial $readmemh(THR_FILE, trom);
            end
            if (DESC_FILE != "") begin : g_df
                initial $readmemh(DESC_FILE, drom);
            end
            reg [PE*NTHR*THR_W-1:0] thr_q;        // thresholds of the block in acc
            reg [PE-1:0]            desc_q;
            always @(posedge clk)
                if (en) begin
                    thr_q <= trom[c3[C_BLK +: NBW]];
                    desc_q <= drom[c3[C_BLK +: NBW]];
                end
            for (gp = 0; gp < PE; gp = gp + 1) begin : g_col
                wire signed [ACC_W-1:0] av = acc[gp * ACC_W +: ACC_W];
                wire signed [THR_W-1:0] ae = av;
                wire [THR_W-1:0] sa = desc_q[gp] ? -ae : ae;
                for (gi = 0; gi < NTHR; gi = gi + 1) begin : g_cmp
                    assign o1_nxt[gp * NTHR + gi] =
                        $signed(sa) >= $signed(thr_q[(gp * NTHR + gi) * THR_W +: THR_W]);
                end
                wire [(2*TP-1)*CNW-1:0] ct;
                for (gi = 0; gi < TP; gi = gi + 1) begin : g_leaf
                    if (gi < NTHR) begin : g_on
                        assign ct[(TP - 1 + gi) * CNW +: CNW] = o1[gp * NTHR + gi];
                    end else begin : g_off
                        assign ct[(TP - 1 + gi) * CNW +: CNW] = {CNW{1'b0}};
                    end
                end
                for (gi = 0; gi < TP - 1; gi = gi + 1) begin : g_sum
                    assign ct[gi * CNW +: CNW] = ct[(2 * gi + 1) * CNW +: CNW] + ct[(2 * gi + 2) * CNW +: CNW];
                end
                wire signed [31:0] q = RQ_MIN + $signed({1'b0, ct[CNW-1:0]});
                assign out_nxt[gp * OUT_W +: OUT_W] = q[OUT_W-1:0];
            end
        end else if (MODE == 1) begin : g_rq
            // ReLU and rounding (S5), saturation (S6)
            localparam integer VW = ACC_W + AS + 2;
            for (gp = 0; gp < PE; gp = gp + 1) begin : g_col
                wire signed [ACC_W-1:0] av = acc[gp * ACC_W +: ACC_W];
                wire                    zero = (RQ_RELU != 0) && av[ACC_W-1];
                wire signed [VW-1:0]    avx = av;
                wire [VW-1:0]           ve = zero ? {VW{1'b0}} : avx;
                wire [XW-1:0]    rounded;
                if (RQ_SHIFT > 0) begin : g_right
                    wire signed [VW-1:0] fl = $signed(ve) >>> RQ_SHIFT;
                    wire [RQ_SHIFT-1:0] rem = ve[RQ_SHIFT-1:0];
                    wire                up;
                    if (RQ_SHIFT > 1) begin : g_wide
                        // above half, or exactly half and the floor odd
                        assign up = rem[RQ_SHIFT-1] && ((|rem[RQ_SHIFT-2:0]) || fl[0]);
                    end else begin : g_one
                        assign up = rem[0] && fl[0];
                    end
                    wire signed [XW-1:0] flx = fl;
                    assign rounded = flx + up;
                end else begin : g_left
                    wire signed [XW-1:0] vex = $signed(ve);
                    assign rounded = vex << AS;
                end
                assign o1_nxt[gp * XW +: XW] = rounded;
                wire [XW-1:0] r = o1[gp * XW +: XW];
                wire signed [XW+31:0] rs = $signed(r);
                wire signed [XW+31:0] lo = RQ_MIN;
                wire signed [XW+31:0] hi = RQ_MAX;
                wire signed [XW+31:0] c = (rs < lo) ? lo : (rs > hi) ? hi : rs;
                assign out_nxt[gp * OUT_W +: OUT_W] = c[OUT_W-1:0];
            end
        end else begin : g_raw
            for (gp = 0; gp < PE; gp = gp + 1) begin : g_col
                wire signed [ACC_W-1:0] av = acc[gp * ACC_W +: ACC_W];
                if (OUT_W > ACC_W) begin : g_ext
                    wire signed [OUT_W-1:0] ax = av;
                    assign o1_nxt[gp * OUT_W +: OUT_W] = ax;
                end else begin : g_cut
                    assign o1_nxt[gp * OUT_W +: OUT_W] = av[OUT_W-1:0];
                end
            end
            assign out_nxt = o1;
        end
    endgenerate

endmodule

`default_nettype wire
