// Element beats to DMA words, the layout of flipq.host.packing (see flipq_unpack): PW = WORD/EW
// elements a word, element i at bit i*EW, each sample of N elements starting a fresh word,
// unused bits 0.
//
// Beats enter a shift register at the top and move down, so after the PW/LANES beats of a full
// word the first beat sits at bit 0, with no run-time index. A sample's last word holds a fixed
// number of beats LB (the same for every sample), which then sit at the top of the register; a
// constant shift by the missing beats moves them to bit 0 and fills above with zeros (the stale
// beats of the previous word fall off the bottom). A word goes to the output register on its
// last beat; in_ready depends on out_ready (never on in_valid) only on that beat, so the input
// moves a beat every cycle while the output drains.
`default_nettype none

module flipq_pack #(
    parameter integer WORD = 32,
    parameter integer EW = 8,
    parameter integer N = 4,
    parameter integer LANES = 1
) (
    input  wire                clk,
    input  wire                rst,
    input  wire [LANES*EW-1:0] in_data,
    input  wire                in_valid,
    output wire                in_ready,
    output reg  [WORD-1:0]     out_data,
    output reg                 out_valid,
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

    localparam integer PW = WORD / EW;
    localparam integer G = LANES * EW;          // bits a beat
    localparam integer BPW = PW / LANES;        // beats a full word
    localparam integer BPS = N / LANES;         // beats a sample
    localparam integer LB = BPS - (BPW * ((BPS - 1) / BPW));   // beats of a sample's last word
    localparam integer UW = BPW * G;            // used bits of a word
    localparam integer KW = clog2(BPW);
    localparam integer SW = clog2(BPS);

    reg [UW-1:0] sh;
    reg [KW-1:0] k;
    reg [SW-1:0] s;

    wire sample_end = (s == BPS - 1);
    wire word_end = (k == BPW - 1) || sample_end;
    wire [UW-1:0] nxt;
    generate
        if (BPW == 1) begin : g_one
            assign nxt = in_data;
        end else begin : g_shift
            assign nxt = {in_data, sh[UW-1:G]};
        end
    endgenerate
    wire [WORD-1:0] full_word;
    assign full_word = nxt;   // zero-extended: the bits above PW*EW stay 0
    wire [WORD-1:0] last_word = full_word >> ((BPW - LB) * G);

    assign in_ready = !word_end || !out_valid || out_ready;
    wire fire_in = in_valid && in_ready;

    always @(posedge clk) begin
        if (fire_in) sh <= nxt;
        if (fire_in && word_end) out_data <= sample_end ? last_word : full_word;
    end

    always @(posedge clk) begin
        if (rst) begin
            k <= 0;
            s <= 0;
            out_valid <= 1'b0;
        end else begin
            if (fire_in) begin
                k <= word_end ? {KW{1'b0}} : k + 1'b1;
                s <= sample_end ? {SW{1'b0}} : s + 1'b1;
            end
            if (fire_in && word_end) out_valid <= 1'b1;
            else if (out_ready) out_valid <= 1'b0;
        end
    end
endmodule

`default_nettype wire
