// DMA words to element beats, the layout of flipq.host.packing: PW = WORD / EW elements a
// little-endian word, element i at bit i*EW, none straddling two words, each sample of N
// elements starting on a fresh word (so its last word may carry fewer elements).
//
// A word is held in a register that shifts down by one beat (LANES elements) per output beat;
// its low LANES*EW bits are the output. Two counters say when a word is used up: the beat
// within the word (PW/LANES beats) and the beat within the sample (N/LANES beats), whose last
// beat also ends the sample's last, possibly partial, word. LANES divides PW and N, so a beat
// never spans two words. The next word is accepted in the cycle the current one's last beat
// leaves, so the output moves a beat every cycle (in_ready depends on out_ready, never on
// in_valid).
`default_nettype none

module flipq_unpack #(
    parameter integer WORD = 32,
    parameter integer EW = 8,
    parameter integer N = 4,
    parameter integer LANES = 1
) (
    input  wire                clk,
    input  wire                rst,
    input  wire [WORD-1:0]     in_data,
    input  wire                in_valid,
    output wire                in_ready,
    output wire [LANES*EW-1:0] out_data,
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

    localparam integer PW = WORD / EW;
    localparam integer G = LANES * EW;          // bits a beat
    localparam integer BPW = PW / LANES;        // beats a full word
    localparam integer BPS = N / LANES;         // beats a sample
    localparam integer KW = clog2(BPW);
    localparam integer SW = clog2(BPS);

    reg [WORD-1:0] sh;
    reg full;
    reg [KW-1:0] k;
    reg [SW-1:0] s;

    wire word_end = (k == BPW - 1) || (s == BPS - 1);
    wire fire_out = full && out_ready;
    wire empty_next = !full || (out_ready && word_end);
    wire fire_in = in_valid && empty_next;

    assign in_ready = empty_next;
    assign out_data = sh[G-1:0];
    assign out_valid = full;

    always @(posedge clk) begin
        if (fire_in) sh <= in_data;
        else if (fire_out) sh <= sh >> G;
    end

    always @(posedge clk) begin
        if (rst) begin
            full <= 1'b0;
            k <= 0;
            s <= 0;
        end else begin
            if (fire_in) full <= 1'b1;
            else if (fire_out && word_end) full <= 1'b0;
            if (fire_out) begin
                k <= word_end ? {KW{1'b0}} : k + 1'b1;
                s <= (s == BPS - 1) ? {SW{1'b0}} : s + 1'b1;
            end
        end
    end
endmodule

`default_nettype wire
