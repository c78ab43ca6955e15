// Width converter: IN_N elements a beat in, OUT_N elements a beat out, element order kept.
//
// Three structures, chosen at elaboration:
//
// * IN_N == OUT_N: wires.
//
// * OUT_N = K * IN_N (gather): a shift register takes each input beat at its top and moves the
//   older ones down, so after K beats the first one sits at the bottom, where element 0 of the
//   output belongs. The K-th beat goes straight into the output register together with the
//   K-1 held ones. No index into the wide word at all; the input (narrow side) takes a beat
//   every cycle as long as the output drains.
//
// * IN_N = K * OUT_N (scatter): the input beat is loaded into a register that is shifted down
//   by one output beat per output beat; its low OUT_N elements are the output. The next input
//   is accepted in the cycle the last slice leaves, so the output (narrow side) moves a beat
//   every cycle.
//
// * Any other pair (e.g. 3 -> 5): a buffer of CAP = IN_N + OUT_N - 1 elements with a count C of
//   the elements held, oldest at the bottom. An output beat is the bottom OUT_N elements and
//   shifts the buffer down by a constant OUT_N elements; an input beat is written at element C
//   (C - OUT_N when an output beat leaves in the same cycle). That write position is the only
//   run-time index, and the count requires it; it is a shift of the input beat by a multiple of
//   EW, OR-ed in because slots at and above C are kept zero. CAP is the least that never
//   deadlocks: with C < OUT_N (no output possible) there is room for IN_N more. It is also
//   enough for full rate on the narrow side while the wide side never blocks: a narrow input
//   always finds room (with the output draining, fewer than OUT_N elements remain after each
//   cycle's output, and CAP - IN_N = OUT_N - 1), and a narrow output always finds OUT_N
//   elements (whenever fewer than OUT_N remain the input adds IN_N > OUT_N).
//
// In the gather, scatter and general cases in_ready may depend combinationally on out_ready
// (to keep the rate); it never depends on in_valid. Output data and valid are registers.
`default_nettype none

module flipq_dwc #(
    parameter integer EW = 8,
    parameter integer IN_N = 1,
    parameter integer OUT_N = 1
) (
    input  wire                clk,
    input  wire                rst,
    input  wire [IN_N*EW-1:0]  in_data,
    input  wire                in_valid,
    output wire                in_ready,
    output wire [OUT_N*EW-1:0] out_data,
    output wire                out_valid,
    input  wire                out_ready
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

    localparam integer IW = IN_N * EW;
    localparam integer OW = OUT_N * EW;

    generate
        if (IN_N == OUT_N) begin : g_pass
            assign out_data = in_data;
            assign out_valid = in_valid;
            assign in_ready = out_ready;

        end else if (OUT_N % IN_N == 0) begin : g_gather
            localparam integer K = OUT_N / IN_N;
            localparam integer KW = clog2(K);
            reg [KW-1:0] k;           // input beats held
            reg [OW-1:0] sh;          // the held beats are in its top k slices
            reg [OW-1:0] od;
            reg ov;
            wire last = (k == K - 1);
            wire fire_in = in_valid && in_ready;
            wire [OW-1:0] nxt = {in_data, sh[OW-1:IW]};
            assign in_ready = !last || !ov || out_ready;
            assign out_data = od;
            assign out_valid = ov;
            always @(posedge clk) begin
                if (fire_in) sh <= nxt;
                if (fire_in && last) od <= nxt;
            end
            always @(posedge clk) begin
                if (rst) begin
                    k <= 0;
                    ov <= 1'b0;
                end else begin
                    if (fire_in) k <= last ? {KW{1'b0}} : k + 1'b1;
                    if (fire_in && last) ov <= 1'b1;
                    else if (out_ready) ov <= 1'b0;
                end
            end

        end else if (IN_N % OUT_N == 0) begin : g_scatter
            localparam integer K = IN_N / OUT_N;
            localparam integer KW = clog2(K + 1);
            reg [KW-1:0] left;        // output beats still in sh
            reg [IW-1:0] sh;
            wire fire_out = (left != 0) && out_ready;
            wire empty_next = (left == 0) || (left == 1 && out_ready);
            wire fire_in = in_valid && empty_next;
            assign in_ready = empty_next;
            assign out_data = sh[OW-1:0];
            assign out_valid = (left != 0);
            always @(posedge clk) begin
                if (fire_in) sh <= in_data;
                else if (fire_out) sh <= sh >> OW;
            end
            always @(posedge clk) begin
                if (rst) left <= 0;
                else if (fire_in) left <= K;
                else if (fire_out) left <= left - 1'b1;
            end

        end else begin : g_general
            localparam integer CAP = IN_N + OUT_N - 1;
            localparam integer BW = CAP * EW;
            localparam integer CW = clog2(CAP + 1);
            reg [CW-1:0] c;
            reg [BW-1:0] b;           // elements 0..c-1 valid, the rest zero
            wire ov = (c >= OUT_N);
            wire fire_out = ov && out_ready;
            wire [CW-1:0] c_after = fire_out ? c - OUT_N : c;
            // Room after this cycle's output: never on in_valid, so no loop.
            assign in_ready = (c_after <= CAP - IN_N);
            wire fire_in = in_valid && in_ready;
            wire [BW-1:0] kept = fire_out ? (b >> OW) : b;
            wire [BW-1:0] placed = {{(BW - IW){1'b0}}, in_data} << (c_after * EW);
            assign out_data = b[OW-1:0];
            assign out_valid = ov;
            always @(posedge clk) begin
                if (rst) begin
                    c <= 0;
                    b <= {BW{1'b0}};
                end else begin
                    c <= c_after + (fire_in ? IN_N : 0);
                    b <= fire_in ? (kept | placed) : kept;
                end
            end
        end
    endgenerate
endmodule

`default_nettype wire
