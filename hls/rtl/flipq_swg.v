`default_nettype none
// Sliding-window generator: one input pixel (CIN x AW) a beat in, for each output pixel its
// R = KH*KW*CIN/SIMD rows of SIMD elements out, fan-in order (ky, kx, c), zeros in the padding.
//
// Two SIMD shapes:
//  - SIMD divides CIN: a row is chunk c of one kernel position (CF = CIN/SIMD chunks a pixel).
//  - SIMD = M*CIN with M dividing KW: a row is M consecutive kernel columns. The line buffer is
//    split into M banks by padded column (bank = column mod M, address = column div M, both kept
//    as counters), so any M consecutive columns sit in M different banks and one cycle reads
//    them; the window's first column selects which bank feeds which position (rotation).
//
// The line buffer holds NR input rows, circular by row slot. Rows are numbered globally across
// frames (frame f, row y -> f*IN_H + y); the writer's slot is that number mod NR. The only
// coupling between writer and reader is DCNT = (rows the writer completed) - LO, LO being the
// first input row of the reader's current output row, top padding counted (so it can lie in
// the previous frame: merely conservative) and clamped to the frame's end (bottom padding rows
// must not free the next frame's rows). The writer may start a row while DCNT < NR (its slot
// then held a row older than anything the reader still needs); the reader may emit an output
// row once the writer completed its real rows (DCNT >= min(KH, rows of the frame left from its
// first row)). So reading and writing overlap and consecutive frames stream without draining.
module flipq_swg #(
    parameter integer AW = 4,
    parameter integer CIN = 4,
    parameter integer IN_H = 8,
    parameter integer IN_W = 8,
    parameter integer KH = 3,
    parameter integer KW = 3,
    parameter integer SY = 1,
    parameter integer SX = 1,
    parameter integer PAD_T = 1,
    parameter integer PAD_L = 1,
    parameter integer PAD_B = 1,
    parameter integer PAD_R = 1,
    parameter integer OUT_H = (IN_H + PAD_T + PAD_B - KH) / SY + 1,
    parameter integer OUT_W = (IN_W + PAD_L + PAD_R - KW) / SX + 1,
    parameter integer SIMD = CIN
) (
    input  wire                 clk,
    input  wire                 rst,
    input  wire [CIN*AW-1:0]    in_data,
    input  wire                 in_valid,
    output wire                 in_ready,
    output reg  [SIMD*AW-1:0]   out_data,
    output reg                  out_valid,
    input  wire                 out_ready
);
    localparam integer PW = CIN * AW;                          // one pixel
    localparam integer M = (SIMD >= CIN) ? SIMD / CIN : 1;     // kernel columns a row (= banks)
    localparam integer CF = (SIMD >= CIN) ? 1 : CIN / SIMD;    // rows a kernel position
    localparam integer KJ = KW / M;                            // column groups a kernel row
    localparam integer PADW = IN_W + PAD_L + PAD_R;
    localparam integer QD = (PADW + M - 1) / M;                // bank words a buffered row

    // Row slots: KH + SY lets the writer fill the next output row's SY new rows while the
    // current one is emitted. At a frame's end the last output row still holds its rows
    // (RL_LAST of them, unused bottom rows included) while the next frame's first window
    // (KH - PAD_T real rows) should already arrive, so an emit-bound stream has no gap
    // between frames.
    localparam integer LO_LAST = (OUT_H - 1) * SY - PAD_T;
    localparam integer LO_LAST_C = (LO_LAST < IN_H) ? LO_LAST : IN_H;
    localparam integer RL_LAST = IN_H - LO_LAST_C;
    localparam integer FIRST = (KH > PAD_T) ? KH - PAD_T : 0;
    localparam integer NR_EDGE = RL_LAST + FIRST;
    localparam integer NR = (NR_EDGE > KH + SY) ? NR_EDGE : KH + SY;
    localparam integer DEPTH = NR * QD;

    // From the last output row of a frame to the first of the next, the first input row moves
    // by FSTEP global rows (FSTEP_C for the clamped LO; negative when top padding reaches back
    // past where the last window started).
    localparam integer FSTEP = IN_H - (OUT_H - 1) * SY;
    localparam integer FSTEP_C = IN_H - PAD_T - LO_LAST_C;
    localparam integer FSLOT = ((FSTEP % NR) + NR) % NR;
    localparam integer SSLOT = SY % NR;
    localparam integer ISLOT = ((NR - (PAD_T % NR)) % NR);     // slot of global row -PAD_T
    localparam integer SXQ = SX / M;
    localparam integer SXR = SX % M;
    localparam integer PLQ = PAD_L / M;
    localparam integer PLR = PAD_L % M;

    localparam integer AB = (DEPTH > 1) ? $clog2(DEPTH) : 1;
    localparam integer AB1 = AB + 1;
    localparam integer MB = (M > 1) ? $clog2(M) : 1;
    localparam integer CB = (CF > 1) ? $clog2(CF) : 1;
    localparam integer JB = (KJ > 1) ? $clog2(KJ) : 1;
    localparam integer KB = (KH > 1) ? $clog2(KH) : 1;
    localparam integer OXB = (OUT_W > 1) ? $clog2(OUT_W) : 1;
    localparam integer OYB = (OUT_H > 1) ? $clog2(OUT_H) : 1;
    localparam integer XB = (IN_W > 1) ? $clog2(IN_W) : 1;
    localparam integer QB = $clog2(QD + 2) + 1;
    localparam integer PB = $clog2(PADW + KW + SX + M + 2) + 1;       // padded column, unsigned
    localparam integer YB = $clog2(IN_H + PAD_T + PAD_B + KH + SY + 2) + 2;  // frame row, signed
    localparam integer DB = $clog2(NR + IN_H + PAD_T + PAD_B + KH + SY + 2) + 2;  // DCNT, signed

    // ---------------------------------------------------------------- coupling counter
    reg signed [DB-1:0] dcnt;
    reg signed [YB-1:0] rows_left;       // IN_H - first input row of the current output row
    wire rd_ok = (dcnt >= KH) || (dcnt >= rows_left);
    // LO's move to the next output row of the frame: SY, less where it reaches the frame's end
    wire signed [YB-1:0] lo_step = (rows_left <= 0) ? 0 : (rows_left < SY) ? rows_left : SY;
    assign in_ready = (dcnt < NR);

    // ---------------------------------------------------------------- writer
    wire wr = in_valid && in_ready;
    reg [XB-1:0] wx;                     // column in the row
    reg [MB-1:0] wbank;                  // (wx + PAD_L) mod M
    reg [QB-1:0] wq;                     // (wx + PAD_L) div M
    reg [AB-1:0] wbase;                  // slot * QD
    wire row_done = wr && (wx == IN_W - 1);

    always @(posedge clk) begin
        if (rst) begin
            wx <= 0;
            wbank <= PLR;
            wq <= PLQ;
            wbase <= 0;
        end else if (wr) begin
            if (row_done) begin
                wx <= 0;
                wbank <= PLR;
                wq <= PLQ;
                wbase <= (wbase == (NR - 1) * QD) ? 0 : wbase + QD;
            end else begin
                wx <= wx + 1'b1;
                if (wbank == M - 1) begin
                    wbank <= 0;
                    wq <= wq + 1'b1;
                end else begin
                    wbank <= wbank + 1'b1;
                end
            end
        end
    end

    // ---------------------------------------------------------------- reader counters
    reg [CB-1:0] c;                      // chunk of the pixel
    reg [JB-1:0] j;                      // column group in the kernel row
    reg [KB-1:0] ky;
    reg [OXB-1:0] ox;
    reg [OYB-1:0] oy;
    reg [PB-1:0] px_lo;                  // padded column of the window's first column: ox*SX
    reg [QB-1:0] q_lo;                   // px_lo div M
    reg [MB-1:0] r_lo;                   // px_lo mod M
    reg [PB-1:0] pxc;                    // padded column of the row's first position
    reg [QB-1:0] qc;                     // pxc div M (pxc mod M is r_lo)
    reg [AB-1:0] base_lo;                // slot of the output row's first input row, * QD
    reg [AB-1:0] rbase;                  // slot of input row ky, * QD
    reg signed [YB-1:0] iy_lo;           // first input row of the output row (frame row)
    reg signed [YB-1:0] iy;              // input row ky

    reg v1;                              // a buffer read is in flight (bank outputs valid)
    wire s1_move = v1 && (!out_valid || out_ready);
    wire issue = rd_ok && (!v1 || s1_move);

    wire last_c = (c == CF - 1);
    wire last_j = (j == KJ - 1);
    wire last_ky = (ky == KH - 1);
    wire last_ox = (ox == OUT_W - 1);
    wire last_oy = (oy == OUT_H - 1);
    wire win_end = issue && last_c && last_j && last_ky;
    wire oy_adv = win_end && last_ox;

    // next column origin when ox advances
    wire [MB:0] r_sum = r_lo + SXR;
    wire r_carry = (r_sum >= M);
    wire [MB-1:0] r_nx = r_carry ? r_sum - M : r_sum;
    wire [QB-1:0] q_nx = q_lo + SXQ + r_carry;
    wire [PB-1:0] px_nx = px_lo + SX;

    // next row origin when oy advances
    wire [AB1-1:0] bsum_row = base_lo + SSLOT * QD;
    wire [AB1-1:0] bsum_frm = base_lo + FSLOT * QD;
    wire [AB-1:0] base_row = (bsum_row >= DEPTH) ? bsum_row - DEPTH : bsum_row;
    wire [AB-1:0] base_frm = (bsum_frm >= DEPTH) ? bsum_frm - DEPTH : bsum_frm;
    wire [AB-1:0] base_nx = last_oy ? base_frm : base_row;
    wire signed [YB-1:0] iy_nx = last_oy ? -PAD_T : iy_lo + SY;

    always @(posedge clk) begin
        if (rst) begin
            dcnt <= PAD_T;
            rows_left <= IN_H + PAD_T;
        end else begin
            dcnt <= dcnt + (row_done ? 1 : 0) - (oy_adv ? (last_oy ? FSTEP_C : lo_step) : 0);
            if (oy_adv)
                rows_left <= last_oy ? IN_H + PAD_T : rows_left - SY;
        end
    end

    always @(posedge clk) begin
        if (rst) begin
            c <= 0; j <= 0; ky <= 0; ox <= 0; oy <= 0;
            px_lo <= 0; q_lo <= 0; r_lo <= 0; pxc <= 0; qc <= 0;
            base_lo <= ISLOT * QD; rbase <= ISLOT * QD;
            iy_lo <= -PAD_T; iy <= -PAD_T;
        end else if (issue) begin
            if (!last_c) begin
                c <= c + 1'b1;
            end else begin
                c <= 0;
                if (!last_j) begin
                    j <= j + 1'b1;
                    qc <= qc + 1'b1;
                    pxc <= pxc + M;
                end else begin
                    j <= 0;
                    if (!last_ky) begin
                        ky <= ky + 1'b1;
                        iy <= iy + 1'b1;
                        rbase <= (rbase == (NR - 1) * QD) ? 0 : rbase + QD;
                        qc <= q_lo;
                        pxc <= px_lo;
                    end else begin
                        ky <= 0;
                        if (!last_ox) begin
                            ox <= ox + 1'b1;
                            px_lo <= px_nx; q_lo <= q_nx; r_lo <= r_nx;
                            pxc <= px_nx; qc <= q_nx;
                            rbase <= base_lo;
                            iy <= iy_lo;
                        end else begin
                            ox <= 0;
                            oy <= last_oy ? 0 : oy + 1'b1;
                            px_lo <= 0; q_lo <= 0; r_lo <= 0;
                            pxc <= 0; qc <= 0;
                            base_lo <= base_nx; rbase <= base_nx;
                            iy_lo <= iy_nx; iy <= iy_nx;
                        end
                    end
                end
            end
        end
    end

    // ---------------------------------------------------------------- line buffer banks
    // What the issued read needs downstream: which bank starts the row, which chunk, and
    // which positions are real pixels.
    reg [MB-1:0] s1_r;
    reg [CB-1:0] s1_c;
    reg [M-1:0] s1_ok;
    wire row_ok = (iy >= 0) && (iy < IN_H);

    wire [M*PW-1:0] rd_all;
    genvar b;
    generate
        for (b = 0; b < M; b = b + 1) begin : bank
            reg [PW-1:0] mem [0:DEPTH-1];
            reg [PW-1:0] rdata;
            // bank b holds the window position (b - r_lo) mod M, one word further on when
            // that position wrapped past bank M-1
            wire [AB-1:0] raddr = rbase + qc + ((b < r_lo) ? 1 : 0);
            always @(posedge clk) begin
                if (wr && wbank == b)
                    mem[wbase + wq] <= in_data;
            end
            always @(posedge clk) begin
                if (issue)
                    rdata <= mem[raddr];
            end
            assign rd_all[b*PW +: PW] = rdata;
        end
    endgenerate

    integer t;
    always @(posedge clk) begin
        if (rst) begin
            v1 <= 1'b0;
        end else if (issue) begin
            v1 <= 1'b1;
        end else if (s1_move) begin
            v1 <= 1'b0;
        end
        if (issue) begin
            s1_r <= r_lo;
            s1_c <= c;
            for (t = 0; t < M; t = t + 1)
                s1_ok[t] <= row_ok && (pxc + t >= PAD_L) && (pxc + t < PAD_L + IN_W);
        end
    end

    // Position t of the row comes from bank (s1_r + t) mod M: an M-way choice on the counter.
    wire [SIMD*AW-1:0] row_data;
    genvar p, rr, k;
    generate
        if (M > 1) begin : rot
            for (p = 0; p < M; p = p + 1) begin : pos
                wire [PW-1:0] cand [0:M-1];
                for (rr = 0; rr < M; rr = rr + 1) begin : src
                    assign cand[rr] = rd_all[((rr + p) % M) * PW +: PW];
                end
                assign row_data[p*PW +: PW] = s1_ok[p] ? cand[s1_r] : {PW{1'b0}};
            end
        end else if (CF > 1) begin : chunk
            wire [SIMD*AW-1:0] cand [0:CF-1];
            for (k = 0; k < CF; k = k + 1) begin : src
                assign cand[k] = rd_all[k*SIMD*AW +: SIMD*AW];
            end
            assign row_data = s1_ok[0] ? cand[s1_c] : {SIMD*AW{1'b0}};
        end else begin : whole
            assign row_data = s1_ok[0] ? rd_all : {PW{1'b0}};
        end
    endgenerate

    always @(posedge clk) begin
        if (rst) begin
            out_valid <= 1'b0;
        end else if (!out_valid || out_ready) begin
            out_valid <= v1;
        end
        if ((!out_valid || out_ready) && v1)
            out_data <= row_data;
    end
endmodule
`default_nettype wire
